"""Open-set ("unknown") rejection: AUROC, threshold calibration and ``predict(reject_unknown=True)``."""

from __future__ import annotations

import numpy as np
import pytest

from edgemeta.contract.bundle import read_bundle, write_bundle
from edgemeta.openset import auroc
from edgemeta.runtime import Bundle, FewShotClassifier, InputError
from edgemeta.train.openset_calibration import calibrate

sklearn_metrics = pytest.importorskip("sklearn.metrics")


# ---- auroc and calibrate on synthetic scores -----------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_auroc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n1, n0 = rng.integers(1, 60, size=2)
    levels = rng.integers(2, 8)                                  # few distinct values: many ties
    known = rng.integers(0, levels, n1).astype(np.float32) + (seed % 2)
    unknown = rng.integers(0, levels, n0).astype(np.float32)
    want = sklearn_metrics.roc_auc_score(np.r_[np.ones(n1), np.zeros(n0)], np.r_[known, unknown])
    assert auroc(known, unknown) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_auroc_equals_sklearn_on_continuous_scores(seed):
    rng = np.random.default_rng(100 + seed)
    known, unknown = rng.normal(1.0, 1.0, 500), rng.normal(0.0, 1.5, 300)
    want = sklearn_metrics.roc_auc_score(np.r_[np.ones(500), np.zeros(300)], np.r_[known, unknown])
    assert auroc(known, unknown) == pytest.approx(want, abs=1e-12)


def test_auroc_extremes():
    assert auroc(np.array([5.0, 6.0]), np.array([1.0, 2.0, 3.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([2.0, 3.0])) == 0.0
    assert auroc(np.full(4, 2.0), np.full(7, 2.0)) == 0.5            # all tied


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 0.99])
def test_calibrate_threshold_accepts_the_target_fraction_of_known(target):
    rng = np.random.default_rng(3)
    known, unknown = rng.normal(0.0, 1.0, 20_000), rng.normal(-3.0, 1.0, 20_000)
    correct = rng.random(20_000) < 0.9
    cal = calibrate(known, unknown, correct, target_accept=target)
    assert (known >= cal["threshold"]).mean() == pytest.approx(target, abs=0.002)
    assert cal["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(
        np.r_[np.ones(20_000), np.zeros(20_000)], np.r_[known, unknown]), abs=1e-4)
    assert cal["closed_set_accuracy"] == pytest.approx(correct.mean() * 100, abs=0.01)
    rows = {r["known_accept"]: r for r in cal["tradeoff"]}
    assert sorted(rows) == pytest.approx([0.8, 0.9, 0.95, 0.99], abs=0.002)
    for r in cal["tradeoff"]:
        assert r["unknown_reject"] == pytest.approx((unknown < r["threshold"]).mean(), abs=1e-4)
    # thresholds fall as more known queries are accepted, and fewer unknown ones are rejected
    thr = [r["threshold"] for r in cal["tradeoff"]]
    assert thr == sorted(thr, reverse=True)


def test_calibrate_on_few_known_scores_accepts_at_least_target_minus_one_sample():
    rng = np.random.default_rng(5)
    for n in (5, 20, 37, 100):
        known = rng.normal(size=n)
        thr = calibrate(known, rng.normal(size=10), np.ones(n, bool), target_accept=0.95)["threshold"]
        assert (known >= thr).mean() >= 0.95 - 1.0 / n


# ---- the shipped bundle's calibration -------------------------------------------------------------

def test_shipped_manifest_open_set_entry(shipped_bundle):
    cal = shipped_bundle.manifest.get("open_set")
    assert cal, "the shipped bundle has no open_set calibration"
    assert cal["score"] == "max_logit"
    assert set(cal["threshold_by_shots"]) >= {"1", "5"}
    assert all(np.isfinite(float(v)) for v in cal["threshold_by_shots"].values())
    # more shots give tighter prototypes: the 5-shot threshold is the higher max-logit
    assert cal["threshold_by_shots"]["5"] > cal["threshold_by_shots"]["1"]
    for k in ("1", "5"):
        assert cal["auroc_by_shots"][k] > 0.9
    assert "val" in cal["calibrated_on"] and "test" not in cal["calibrated_on"]
    assert 0.5 < cal["target_known_accept"] < 1.0


def test_threshold_for_picks_the_nearest_calibrated_shots(shipped_bundle):
    thr = {int(k): float(v) for k, v in shipped_bundle.manifest["open_set"]["threshold_by_shots"].items()}
    clf = FewShotClassifier(shipped_bundle)
    assert clf.threshold_for(1) == thr[1]
    assert clf.threshold_for(5) == thr[5]
    assert clf.threshold_for(4) == thr[5]
    assert clf.threshold_for(50) == thr[max(thr)]
    assert clf.threshold_for(3) == thr[1]                   # a tie goes to the fewer shots (the lower threshold)
    assert FewShotClassifier(shipped_bundle, unknown_threshold=-3.5).threshold_for(5) == -3.5


@pytest.fixture(scope="module")
def open_set_episodes(vinyals_test, task_drawer):
    """4 episodes of 5 known classes (5 shots, 15 queries each) + 5 other classes' queries."""
    eps = []
    for seed in range(4):
        sx, sy, qx, qy = task_drawer(vinyals_test, 10, 5, 15, seed=900 + seed)
        known = list(dict.fromkeys(sy.tolist()))[:5]
        s, q = np.isin(sy, known), np.isin(qy, known)
        eps.append((sx[s], sy[s], qx[q], qy[q], qx[~q]))
    return eps


def test_reject_unknown_on_the_shipped_bundle(shipped_bundle, open_set_episodes):
    known_ok, known_right, unknown_rejected = [], [], []
    for sx, sy, kx, ky, ux in open_set_episodes:
        clf = FewShotClassifier(shipped_bundle).fit(sx, sy)
        pk, pu = clf.predict(kx, reject_unknown=True), clf.predict(ux, reject_unknown=True)
        assert pk.dtype == object and set(pk.tolist()) <= set(sy.tolist()) | {"unknown"}
        known_ok.append(pk != "unknown")
        known_right.append(pk == ky)
        unknown_rejected.append(pu == "unknown")
        # rejection only replaces labels: accepted queries keep the closed-set answer
        closed = clf.predict(kx)
        np.testing.assert_array_equal(pk[pk != "unknown"], closed[pk != "unknown"])
    known_ok, known_right, unknown_rejected = map(np.concatenate, (known_ok, known_right, unknown_rejected))
    # seen on fp32 and int8: ~91 % of known accepted (target 95 % on val classes), ~99.7 % unknown rejected
    assert known_ok.mean() > 0.8, known_ok.mean()
    assert known_right.mean() > 0.8, known_right.mean()
    assert unknown_rejected.mean() > 0.9, unknown_rejected.mean()


def test_reject_uses_the_threshold_for_the_fewest_shots(shipped_bundle, open_set_episodes):
    sx, sy, kx, _, ux = open_set_episodes[0]
    x = np.concatenate([kx, ux])
    clf = FewShotClassifier(shipped_bundle).fit(sx, sy)
    top = clf.decision_function(x).max(1)
    cal = shipped_bundle.manifest["open_set"]["threshold_by_shots"]
    np.testing.assert_array_equal(clf.predict(x, reject_unknown=True) == "unknown", top < float(cal["5"]))
    # one class with a single shot: the 1-shot threshold applies
    one = np.r_[np.flatnonzero(sy != sy[0]), np.flatnonzero(sy == sy[0])[:1]]
    clf1 = FewShotClassifier(shipped_bundle).fit(sx[one], sy[one])
    top1 = clf1.decision_function(x).max(1)
    np.testing.assert_array_equal(clf1.predict(x, reject_unknown=True) == "unknown", top1 < float(cal["1"]))


def test_unknown_threshold_and_label_override(shipped_bundle, open_set_episodes):
    sx, sy, kx, _, ux = open_set_episodes[1]
    x = np.concatenate([kx, ux])
    everything = FewShotClassifier(shipped_bundle, unknown_threshold=np.inf, unknown_label=-1).fit(sx, sy)
    assert everything.predict(x, reject_unknown=True).tolist() == [-1] * len(x)
    nothing = FewShotClassifier(shipped_bundle, unknown_threshold=-np.inf).fit(sx, sy)
    np.testing.assert_array_equal(nothing.predict(x, reject_unknown=True), nothing.predict(x))
    clf = FewShotClassifier(shipped_bundle).fit(sx, sy)
    top = clf.decision_function(x).max(1)
    mid = float(np.median(top))
    clf.unknown_threshold = mid
    clf.unknown_label = "other"
    got = clf.predict(x, reject_unknown=True)
    np.testing.assert_array_equal(got == "other", top < mid)
    assert (got == "other").sum() == (top < mid).sum() > 0


@pytest.fixture(scope="module")
def bundle_without_open_set(bundle_dir, tmp_path_factory):
    manifest, files = read_bundle(bundle_dir)
    manifest.pop("open_set", None)
    out = write_bundle(tmp_path_factory.mktemp("noopen") / "plain.bundle", manifest, files)
    return Bundle.load(out)


def test_bundle_without_open_set_asks_for_unknown_threshold(bundle_without_open_set, task):
    sx, sy, qx, qy = task
    clf = FewShotClassifier(bundle_without_open_set).fit(sx, sy)
    assert clf.threshold_for(5) is None
    with pytest.raises(InputError, match="no calibrated open-set threshold; pass unknown_threshold="):
        clf.predict(qx, reject_unknown=True)
    assert (clf.predict(qx) == qy).mean() >= 0.8              # closed-set prediction still works
    clf.unknown_threshold = -np.inf
    np.testing.assert_array_equal(clf.predict(qx, reject_unknown=True), clf.predict(qx))
    with_thr = FewShotClassifier(bundle_without_open_set, unknown_threshold=np.inf).fit(sx, sy)
    assert set(with_thr.predict(qx, reject_unknown=True).tolist()) == {"unknown"}
