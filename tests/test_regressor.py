"""FewShotRegressor on the shipped sinusoid bundles, through the device runtime (no torch): learning,
incremental learning and exact forgetting by group, uncertainty, the private state (plain and
encrypted, no raw samples, constant size), and every hostile input or state refused with its error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgemeta.errors import BundleError, InputError, NotFittedError, StateError
from edgemeta.runtime.regression_bundle import RegressionBundle
from edgemeta.runtime.regressor import FewShotRegressor

MODELS = Path(__file__).resolve().parents[1] / "models"
METHODS = [m for m in ("alpaca", "metasgd") if (MODELS / f"sinusoid-{m}" / "manifest.json").exists()]
pytestmark = pytest.mark.skipif(not METHODS, reason="no shipped sinusoid bundle in models/")


@pytest.fixture(scope="module", params=METHODS)
def bundle(request) -> RegressionBundle:
    return RegressionBundle.load(MODELS / f"sinusoid-{request.param}")


def task(seed: int, n: int, amp: float = 2.0, phase: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).uniform(-5, 5, size=(n, 1))
    return x.astype(np.float32), amp * np.sin(x[:, 0] - phase)


def test_fit_predicts_a_new_sinusoid_from_ten_points(bundle):
    xs, ys = task(0, 10)
    xq, yq = task(1, 200)
    reg = FewShotRegressor(bundle).fit(xs, ys)
    pred = reg.predict(xq)
    assert pred.shape == (200,) and pred.dtype == np.float32
    assert np.mean((pred - yq) ** 2) < 0.05            # the rules reach ~0.005 at K = 10 on average
    assert reg.score(xq, yq) > 0.97
    assert reg.n_samples_ == 10 and reg.groups_ == ["default"]


def test_partial_fit_in_parts_equals_fit_on_everything(bundle):
    xs, ys = task(2, 12)
    xq, _ = task(3, 50)
    whole = FewShotRegressor(bundle).fit(xs, ys, groups=["a"] * 6 + ["b"] * 6).predict(xq)
    parts = FewShotRegressor(bundle)
    for i in range(0, 12, 3):
        parts.partial_fit(xs[i:i + 3], ys[i:i + 3], groups="a" if i < 6 else "b")
    np.testing.assert_allclose(parts.predict(xq), whole, rtol=1e-5, atol=1e-5)
    assert parts.n_samples_ == 12 and parts.groups_ == ["a", "b"]


def test_forget_group_equals_fit_without_it(bundle):
    xs, ys = task(4, 8)
    xo, yo = task(5, 5, amp=4.0, phase=0.2)          # another source, another function
    xq, _ = task(6, 40)
    reg = FewShotRegressor(bundle).fit(np.concatenate([xs, xo]), np.concatenate([ys, yo]),
                                       groups=[1] * 8 + [2] * 5)
    before = reg.predict(xq)
    reg.forget(2)
    alone = FewShotRegressor(bundle).fit(xs, ys, groups=1).predict(xq)
    np.testing.assert_allclose(reg.predict(xq), alone, rtol=1e-5, atol=1e-5)
    assert np.abs(before - alone).max() > 0.1        # the forgotten source had changed the answer
    with pytest.raises(InputError, match="not held"):
        reg.forget(2)
    reg.forget(1)
    with pytest.raises(NotFittedError):
        reg.predict(xq)


def test_uncertainty_where_the_rule_gives_one(bundle):
    xs, ys = task(7, 5)
    reg = FewShotRegressor(bundle).fit(xs, ys)
    xq = np.array([[float(xs[0, 0])], [7.5]], np.float32)       # at a support point / outside [-5, 5]
    if not bundle.gives_variance:
        with pytest.raises(InputError, match="no uncertainty"):
            reg.predict(xq, return_std=True)
        return
    mean, std = reg.predict(xq, return_std=True)
    np.testing.assert_array_equal(mean, reg.predict(xq))
    assert std.shape == (2,) and (std > 0).all() and std[1] > std[0]     # wider off the data (2x: overconfident, docs)
    many = FewShotRegressor(bundle).fit(*task(8, 40))
    xg = np.linspace(-5, 5, 50, dtype=np.float32)[:, None]
    assert many.predict(xg, return_std=True)[1].mean() < reg.predict(xg, return_std=True)[1].mean()


def test_save_load_round_trip_plain_and_encrypted(bundle, tmp_path):
    pytest.importorskip("cryptography")
    xs, ys = task(9, 10)
    xq, _ = task(10, 30)
    reg = FewShotRegressor(bundle).fit(xs, ys, groups=["p"] * 4 + ["q"] * 6)
    key = os.urandom(32)
    for k in (None, key):
        path = tmp_path / f"s{k is None}.state"
        reg.save(path, key=k)
        back = FewShotRegressor.load(bundle, path, key=k)
        np.testing.assert_array_equal(back.predict(xq), reg.predict(xq))
        assert back.groups_ == ["p", "q"] and back.n_samples_ == 10
        back.forget("q")
        np.testing.assert_allclose(back.predict(xq), FewShotRegressor(bundle).fit(xs[:4], ys[:4], groups="p").predict(xq),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(StateError, match="wrong key"):
        FewShotRegressor.load(bundle, tmp_path / "sFalse.state", key=os.urandom(32))
    with pytest.raises(StateError, match="encrypted"):
        FewShotRegressor.load(bundle, tmp_path / "sFalse.state")


def test_state_holds_sums_not_samples_and_its_size_does_not_grow(bundle, tmp_path):
    xs, ys = task(11, 3)
    big_x, big_y = task(12, 300)
    a, b = tmp_path / "a.state", tmp_path / "b.state"
    FewShotRegressor(bundle).fit(xs, ys).save(a)
    FewShotRegressor(bundle).fit(np.concatenate([xs, big_x]), np.concatenate([ys, big_y])).save(b)
    assert a.stat().st_size == b.stat().st_size
    data = b.read_bytes()
    for v in (*big_x[:20, 0], *big_y[:20]):
        for raw in (np.float32(v).tobytes(), np.float64(v).tobytes()):
            assert raw not in data


def _corrupt(src: Path, dst: Path, how: str) -> Path:
    data = bytearray(src.read_bytes())
    if how == "truncated":
        data = data[:-7]
    elif how == "flipped":
        data[-20] ^= 0x40
    elif how == "padded":
        data += b"\0" * 9
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("how", ["truncated", "flipped", "padded"])
def test_damaged_state_is_refused(bundle, tmp_path, how):
    path = tmp_path / "ok.state"
    FewShotRegressor(bundle).fit(*task(13, 6)).save(path)
    with pytest.raises(StateError):
        FewShotRegressor.load(bundle, _corrupt(path, tmp_path / "bad.state", how))


def test_state_of_another_bundle_or_a_classifier_is_refused(tmp_path):
    if len(METHODS) < 2:
        pytest.skip("needs both shipped sinusoid bundles")
    a, b = (RegressionBundle.load(MODELS / f"sinusoid-{m}") for m in METHODS)
    FewShotRegressor(a).fit(*task(14, 6)).save(tmp_path / "a.state")
    with pytest.raises(StateError, match="another bundle"):
        FewShotRegressor.load(b, tmp_path / "a.state")


def test_classifier_state_is_not_a_regression_state(bundle, tmp_path):
    from edgemeta.runtime.classifier import FewShotClassifier

    clf = FewShotClassifier(MODELS / "omniglot-conv4-proto")
    clf.fit(np.random.default_rng(0).random((4, 28, 28)).astype(np.float32), [0, 0, 1, 1])
    clf.save(tmp_path / "c.state")
    with pytest.raises(StateError, match="not a regression state"):
        FewShotRegressor.load(bundle, tmp_path / "c.state")


def test_hostile_state_arrays_are_refused(bundle, tmp_path):
    from edgemeta.runtime.regression_state import (
        RegressionState,
        write_regression_state,
    )

    P, O = bundle.embedding_dim, bundle.outputs
    good = RegressionState(bundle.identity, bundle.method, ["g"], np.eye(P)[None] * 2, np.zeros((1, P, O)),
                           np.array([2]), {})
    cases = {
        "nan": dict(targets=np.full((1, P, O), np.nan)),
        "count": dict(samples=np.array([3])),
        "asymmetric": dict(gram=(np.eye(P) * 2 + np.triu(np.ones((P, P)), 1))[None]),
        "shape": dict(gram=np.eye(P + 1)[None] * 2),
        "groups": dict(groups=["g", "g"], gram=np.stack([np.eye(P) * 2] * 2), targets=np.zeros((2, P, O)),
                       samples=np.array([2, 2])),
        "bundle": dict(bundle_id="0" * 64),
    }
    for name, change in cases.items():
        st = RegressionState(**{**good.__dict__, **change})
        path = tmp_path / f"{name}.state"
        write_regression_state(path, st)
        with pytest.raises(StateError):
            FewShotRegressor.load(bundle, path)
    write_regression_state(tmp_path / "good.state", good)
    assert FewShotRegressor.load(bundle, tmp_path / "good.state").n_samples_ == 2


BAD_X = [None, "1,2", 3.0, {"x": 1}, [[1.0], [2.0, 3.0]], np.array([1.0, 2.0]), np.zeros((2, 2), np.float32),
         np.array([[True], [False]]), np.array([["a"], ["b"]]), np.array([[np.nan], [1.0]]),
         np.array([[np.inf], [1.0]]), np.array([[1e39], [1.0]]), np.zeros((0, 1)), np.zeros((2, 1, 1))]


@pytest.mark.parametrize("x", BAD_X, ids=range(len(BAD_X)))
def test_hostile_inputs_raise_input_error(bundle, x):
    with pytest.raises(InputError):
        FewShotRegressor(bundle).fit(x, np.zeros(2))


BAD_Y = [None, "ab", np.array([1.0, np.nan]), np.array([1.0, np.inf]), np.zeros(3), np.zeros((2, 2)),
         np.array(["a", "b"]), [1.0, [2.0]], np.array([1e200, 1.0])]


@pytest.mark.parametrize("y", BAD_Y, ids=range(len(BAD_Y)))
def test_hostile_targets_raise_input_error(bundle, y):
    with pytest.raises(InputError):
        FewShotRegressor(bundle).fit(np.zeros((2, 1), np.float32), y)


@pytest.mark.parametrize("groups", [[1, "a"], [None, None], [1.5, 2.5], [True, False], ["a"], 3.5])
def test_bad_groups_raise_input_error(bundle, groups):
    with pytest.raises(InputError):
        FewShotRegressor(bundle).fit(np.zeros((2, 1), np.float32), np.zeros(2), groups=groups)


def test_mixing_int_and_str_groups_across_calls_is_refused(bundle):
    reg = FewShotRegressor(bundle).fit(*task(15, 4), groups=1)
    with pytest.raises(InputError, match="mix"):
        reg.partial_fit(*task(16, 4), groups="a")
    assert reg.groups_ == [1] and reg.n_samples_ == 4          # nothing was added


def test_predict_before_fit_and_on_no_rows(bundle):
    reg = FewShotRegressor(bundle)
    with pytest.raises(NotFittedError):
        reg.predict(np.zeros((1, 1), np.float32))
    reg.fit(*task(17, 4))
    assert reg.predict(np.zeros((0, 1), np.float32)).shape == (0,)


def test_classifier_bundle_is_not_a_regression_bundle():
    with pytest.raises(BundleError, match="not a vector-input regression bundle"):
        RegressionBundle.load(MODELS / "omniglot-conv4-proto")


def _copy_bundle(tmp_path: Path, swap: dict[str, str] | None = None, flip: str | None = None) -> Path:
    """A copy of the shipped metasgd bundle with graph files swapped (manifest resealed) or one byte flipped."""
    import json

    from edgemeta.contract.bundle import seal_manifest

    src = MODELS / "sinusoid-metasgd"
    out = tmp_path / "b"
    out.mkdir()
    m = json.loads((src / "manifest.json").read_text())
    files = {n: (src / (swap or {}).get(n, n)).read_bytes() for n in m["files"]}
    if flip:
        files[flip] = files[flip][:100] + bytes([files[flip][100] ^ 1]) + files[flip][101:]
        sealed = m
    else:
        sealed = seal_manifest({k: v for k, v in m.items() if k not in ("files", "integrity")}, files)
    for n, data in files.items():
        (out / n).write_bytes(data)
    (out / "manifest.json").write_text(json.dumps(sealed))
    return out


@pytest.mark.skipif("metasgd" not in METHODS, reason="needs the shipped metasgd bundle")
@pytest.mark.parametrize("case, message", [
    ({"flip": "backbone.onnx"}, "sha256 of backbone.onnx"),
    ({"swap": {"predict.onnx": "adapt.onnx"}}, "contract"),
    ({"swap": {"backbone.onnx": "predict.onnx"}}, "contract"),
])
def test_tampered_regression_bundle_is_refused(tmp_path, case, message):
    with pytest.raises(BundleError, match=message):
        RegressionBundle.load(_copy_bundle(tmp_path, **case))


def test_state_arrays_of_the_wrong_dtype_are_refused(bundle, tmp_path):
    from edgemeta.runtime.regression_state import ARRAYS
    from edgemeta.runtime.state import pack_body, seal_body

    P, O = bundle.embedding_dim, bundle.outputs
    meta = {"bundle_id": bundle.identity, "kind": "regression", "method": bundle.method, "groups": ["g"]}
    arrays = [("group_gram", (np.eye(P) * 2)[None].astype("<f4")), ("group_targets", np.zeros((1, P, O), "<f8")),
              ("group_samples", np.array([2], "<i8"))]
    assert [n for n, _ in arrays] == list(ARRAYS)
    (tmp_path / "f32.state").write_bytes(seal_body(pack_body(arrays, meta)))
    with pytest.raises(StateError, match="group_gram is float32"):
        FewShotRegressor.load(bundle, tmp_path / "f32.state")
    extra = [*arrays[:1], ("group_gram_copy", arrays[0][1])]
    (tmp_path / "x.state").write_bytes(seal_body(pack_body(extra, meta)))
    with pytest.raises(StateError, match="unknown arrays"):
        FewShotRegressor.load(bundle, tmp_path / "x.state")


def test_a_classifier_refuses_a_regression_bundle():
    from edgemeta.runtime.classifier import FewShotClassifier

    with pytest.raises(BundleError, match="regression bundle"):
        FewShotClassifier(MODELS / f"sinusoid-{METHODS[0]}")


def test_scikit_learn_clone_and_cross_validation(bundle):
    sklearn = pytest.importorskip("sklearn")
    from sklearn.base import clone, is_regressor
    from sklearn.model_selection import cross_val_score

    reg = FewShotRegressor(bundle)
    assert is_regressor(reg) and clone(reg).bundle is bundle
    x, y = task(18, 30)
    scores = cross_val_score(reg, x, y, cv=3)            # R^2 of each fold: a 20-point fit of one sinusoid
    assert scores.shape == (3,) and scores.min() > 0.9, (sklearn.__version__, scores)
    reg.fit(x, y)
    assert clone(reg).params_ is None and reg.set_params(threads=1) is reg and reg.n_samples_ == 30
    with pytest.raises(InputError, match="unknown parameter"):
        reg.set_params(alpha=1.0)


def test_predict_from_threads_while_adding_samples(bundle):
    import threading

    reg = FewShotRegressor(bundle).fit(*task(19, 10), groups="a")
    xq, _ = task(20, 50)
    errors: list[BaseException] = []

    def predict_many() -> None:
        try:
            for _ in range(30):
                assert np.isfinite(reg.predict(xq)).all()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=predict_many) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(20):
        reg.partial_fit(*task(100 + i, 2), groups="b")
    for t in threads:
        t.join()
    assert not errors and reg.n_samples_ == 50


def test_sinusoid_tasks_follow_the_benchmark_and_streams_differ():
    from edgemeta.data.sinusoid import TEST_SEED, VAL_SEED, sample_tasks, sinusoid

    b = sample_tasks(np.random.default_rng(0), 2000, 5, 100)
    assert b.x_support.shape == (2000, 5, 1) and b.y_query.shape == (2000, 100, 1)
    assert 0.1 <= b.amplitude.min() and b.amplitude.max() <= 5.0 and 0 <= b.phase.min() and b.phase.max() <= np.pi
    assert -5 <= b.x_query.min() and b.x_query.max() <= 5
    np.testing.assert_allclose(b.y_query[..., 0], sinusoid(b.x_query[..., 0], b.amplitude[:, None], b.phase[:, None]),
                               atol=1e-5)          # y from float64 x, compared at its float32 rounding
    test, val = (sample_tasks(np.random.default_rng([s, 5]), 100, 5, 0) for s in (TEST_SEED, VAL_SEED))
    assert not set(test.amplitude) & set(val.amplitude) and not set(test.amplitude) & set(b.amplitude)


def test_regression_device_side_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "import edgemeta.regression_cli, edgemeta.regression_eval, edgemeta.contract.regression_csv\n"
            "from edgemeta.runtime.regressor import FewShotRegressor\n"
            f"r = FewShotRegressor({str(MODELS / ('sinusoid-' + METHODS[0]))!r})\n"
            "r.fit(np.zeros((3, 1), np.float32), [0.0, 1.0, 2.0]); r.predict(np.ones((2, 1), np.float32))\n"
            "print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
