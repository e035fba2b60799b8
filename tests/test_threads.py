"""Thread safety: predictions from several threads while another thread adds and forgets classes.

Every answer must come from one consistent head: probabilities of one ``classes_`` set that really
existed, predictions all from the labels registered at one moment.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgemeta.runtime import FewShotClassifier

DURATION_S = 3.0


def test_predict_while_another_thread_adds_and_forgets_classes(shipped_bundle, vinyals_test, task_drawer):
    sx, sy, qx, qy = task_drawer(vinyals_test, 12, 3, 2, seed=7)
    order = list(dict.fromkeys(sy.tolist()))               # the 12 classes, in draw order
    first, extra = order[:5], order[5:]
    clf = FewShotClassifier(shipped_bundle, unknown_threshold=-8.0)
    clf.fit(sx[np.isin(sy, first)], sy[np.isin(sy, first)])

    history_lock = threading.Lock()
    history: list[frozenset] = [frozenset(first)]           # every class set that (will) exist
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = {"predict": 0, "proba": 0, "reject": 0, "writes": 0}

    def sets_so_far() -> list[frozenset]:
        with history_lock:
            return list(history)

    def announce(s: set) -> None:                           # recorded before the change is made
        with history_lock:
            history.append(frozenset(s))

    def writer() -> None:
        try:
            current = set(first)
            rng = np.random.default_rng(0)
            while not stop.is_set():
                missing = [c for c in extra if c not in current]
                if missing and (len(current) < 4 or rng.random() < 0.6):
                    c = missing[rng.integers(len(missing))]
                    announce(current | {c})
                    clf.partial_fit(sx[sy == c], sy[sy == c])
                    current.add(c)
                elif len(current) > 2:
                    c = sorted(current)[rng.integers(len(current))]
                    announce(current - {c})
                    clf.forget(c)
                    current.discard(c)
                counts["writes"] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            stop.set()

    def reader(kind: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                batch = qx[rng.choice(len(qx), 6, replace=False)]
                if kind == "proba":
                    p = clf.predict_proba(batch)
                    assert p.shape[0] == 6 and np.all(p >= 0)
                    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
                    widths = {len(s) for s in sets_so_far()}
                    assert p.shape[1] in widths, (p.shape, widths)
                else:
                    pred = clf.predict(batch, reject_unknown=(kind == "reject"))
                    got = set(pred.tolist()) - ({"unknown"} if kind == "reject" else set())
                    assert any(got <= s for s in sets_so_far()), f"{got} was never one registered set"
                counts[kind] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer, name="writer")]
    threads += [threading.Thread(target=reader, args=(k, i), name=k) for i, k in
                enumerate(["predict", "proba", "reject", "proba"])]
    for t in threads:
        t.start()
    time.sleep(DURATION_S)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    assert counts["writes"] >= 20 and min(counts[k] for k in ("predict", "proba", "reject")) >= 10, counts
    assert len({len(s) for s in history}) >= 3                # the class count really changed under the readers
    # the end state equals fit on what is held
    held = clf.class_counts()
    rows = np.isin(sy, list(held))
    ref = FewShotClassifier(shipped_bundle).fit(sx[rows], sy[rows])
    np.testing.assert_array_equal(clf.classes_, ref.classes_)
    np.testing.assert_allclose(clf.params_["prototypes"], ref.params_["prototypes"], rtol=1e-5, atol=1e-6)


def test_concurrent_partial_fit_loses_no_sample(bundle, lake_test, task_drawer):
    """Two threads adding different classes (and shots) at once: nothing is lost or duplicated."""
    sx, sy, qx, _ = task_drawer(lake_test, 8, 4, 1, seed=11)
    order = list(dict.fromkeys(sy.tolist()))
    clf = FewShotClassifier(bundle)
    errors: list[BaseException] = []

    def add(classes: list[str]) -> None:
        try:
            for c in classes:
                rows = np.flatnonzero(sy == c)
                for r in rows:                              # one shot per call: many small updates
                    clf.partial_fit(sx[r:r + 1], sy[r:r + 1])
                    if clf.classes_ is not None:
                        clf.predict(qx[:2])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(order[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    assert clf.class_counts() == {c: 4 for c in sorted(order)}
    ref = FewShotClassifier(bundle).fit(sx, sy)
    np.testing.assert_array_equal(clf.classes_, ref.classes_)
    np.testing.assert_allclose(clf.params_["prototypes"], ref.params_["prototypes"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(clf.predict(qx), ref.predict(qx))


@pytest.mark.parametrize("n_threads", [4])
def test_parallel_predictions_equal_serial_ones(bundle, task, n_threads):
    sx, sy, qx, _ = task
    clf = FewShotClassifier(bundle).fit(sx, sy)
    want = clf.decision_function(qx)
    out: dict[int, list[np.ndarray]] = {i: [] for i in range(n_threads)}

    def run(i: int) -> None:
        for _ in range(20):
            out[i].append(clf.decision_function(qx))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i in range(n_threads):
        assert len(out[i]) == 20
        for got in out[i]:
            np.testing.assert_array_equal(got, want)
