"""Incremental learning on the device: ``partial_fit`` and ``forget`` equal ``fit`` on what is held.

Run on the tiny session bundle (Lake split) and on the shipped bundle (Vinyals split), each with
never-seen test characters.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemeta.runtime import FewShotClassifier, InputError

PARAMS_TOL = dict(rtol=1e-5, atol=1e-6)      # head parameters: same embeddings, another summation order
LOGITS_TOL = dict(rtol=1e-5, atol=1e-4)


@pytest.fixture(params=["tiny", "shipped"])
def case(request):
    """``(bundle, (support_x, support_y, query_x, query_y))``: 5-way 5-shot, 5 queries per class."""
    if request.param == "tiny":
        return request.getfixturevalue("bundle"), request.getfixturevalue("task")
    return request.getfixturevalue("shipped_bundle"), request.getfixturevalue("shipped_task")


def assert_same_classifier(a: FewShotClassifier, b: FewShotClassifier, qx: np.ndarray) -> None:
    np.testing.assert_array_equal(a.classes_, b.classes_)
    assert a.classes_.dtype == b.classes_.dtype
    assert sorted(a.params_) == sorted(b.params_)
    for name in a.params_:
        assert a.params_[name].shape == b.params_[name].shape, name
        np.testing.assert_allclose(a.params_[name], b.params_[name], **PARAMS_TOL, err_msg=name)
    np.testing.assert_allclose(a.decision_function(qx), b.decision_function(qx), **LOGITS_TOL)
    np.testing.assert_array_equal(a.predict(qx), b.predict(qx))
    assert a.class_counts() == b.class_counts()


def test_partial_fit_class_by_class_equals_fit(case):
    b, (sx, sy, qx, _) = case
    ref = FewShotClassifier(b).fit(sx, sy)
    inc = FewShotClassifier(b)
    for c in np.unique(sy)[::-1]:                       # another arrival order than fit's
        assert inc.partial_fit(sx[sy == c], sy[sy == c]) is inc
    assert_same_classifier(inc, ref, qx)


def test_partial_fit_shot_by_shot_equals_fit(case):
    b, (sx, sy, qx, qy) = case
    ref = FewShotClassifier(b).fit(sx, sy)
    inc = FewShotClassifier(b)
    classes = np.unique(sy)
    for shot in range(5):                               # one new shot of every class per call
        idx = np.array([np.flatnonzero(sy == c)[shot] for c in classes])
        inc.partial_fit(sx[idx], sy[idx])
        assert inc.class_counts() == {c: shot + 1 for c in classes.tolist()}
    assert_same_classifier(inc, ref, qx)
    assert (inc.predict(qx) == qy).mean() >= 0.8


def test_partial_fit_one_image_at_a_time_from_lists(case):
    b, (sx, sy, qx, _) = case
    ref = FewShotClassifier(b).fit(sx, sy)
    inc = FewShotClassifier(b)
    for i in np.random.default_rng(0).permutation(len(sy)):
        inc.partial_fit([sx[i]], [str(sy[i])])
    assert_same_classifier(inc, ref, qx)


def test_partial_fit_after_fit_equals_fit_on_everything(case):
    b, (sx, sy, qx, _) = case
    first = np.isin(sy, np.unique(sy)[:3])
    inc = FewShotClassifier(b).fit(sx[first], sy[first]).partial_fit(sx[~first], sy[~first])
    assert_same_classifier(inc, FewShotClassifier(b).fit(sx, sy), qx)


def test_one_class_is_held_without_a_head_until_a_second_arrives(case):
    b, (sx, sy, qx, _) = case
    c0, c1 = np.unique(sy)[:2]
    clf = FewShotClassifier(b).partial_fit(sx[sy == c0], sy[sy == c0])
    assert clf.classes_ is None and clf.params_ is None
    assert clf.class_counts() == {c0: 5}
    for call in (clf.predict, clf.predict_proba, clf.decision_function):
        with pytest.raises(InputError, match="at least two classes"):
            call(qx)
    clf.partial_fit(sx[sy == c0][:2], sy[sy == c0][:2])       # more shots of the same class: still one class
    assert clf.classes_ is None and clf.class_counts() == {c0: 7}
    with pytest.raises(InputError, match="at least two classes"):
        clf.predict(qx)
    clf.partial_fit(sx[sy == c1], sy[sy == c1])
    assert clf.classes_.tolist() == [c0, c1]
    assert clf.predict(qx).shape == (len(qx),)
    both = np.isin(sy, [c0, c1])
    ref_x = np.concatenate([sx[sy == c0], sx[sy == c0][:2], sx[sy == c1]])
    ref_y = np.concatenate([sy[sy == c0], sy[sy == c0][:2], sy[sy == c1]])
    assert both.sum() == 10
    assert_same_classifier(clf, FewShotClassifier(b).fit(ref_x, ref_y), qx)


def test_forget_equals_fit_on_the_remaining_samples(case):
    b, (sx, sy, qx, qy) = case
    clf = FewShotClassifier(b).fit(sx, sy)
    gone = np.unique(sy)[2]
    assert clf.forget(gone) is clf
    assert gone not in clf.classes_.tolist()
    assert clf.classes_.tolist() == sorted(set(sy.tolist()) - {gone})
    assert gone not in clf.class_counts()
    pred = clf.predict(qx)
    assert gone not in set(pred.tolist())
    assert clf.predict_proba(qx).shape == (len(qx), 4)
    keep = sy != gone
    assert_same_classifier(clf, FewShotClassifier(b).fit(sx[keep], sy[keep]), qx)
    # the remaining classes are still recognised
    assert (pred[qy != gone] == qy[qy != gone]).mean() >= 0.8
    # and the forgotten class can be learned again
    clf.partial_fit(sx[~keep], sy[~keep])
    assert_same_classifier(clf, FewShotClassifier(b).fit(np.concatenate([sx[keep], sx[~keep]]),
                                                         np.concatenate([sy[keep], sy[~keep]])), qx)


def test_forget_int_label(bundle, task):
    sx, sy, qx, _ = task
    ids = {n: i for i, n in enumerate(sorted(set(sy.tolist())))}
    y = np.array([ids[n] * 10 for n in sy])
    clf = FewShotClassifier(bundle).fit(sx, y)
    clf.forget(20)                                      # a plain int
    clf.forget(np.int64(30))                            # a numpy int
    assert clf.classes_.tolist() == [0, 10, 40]
    keep = np.isin(y, [0, 10, 40])
    assert_same_classifier(clf, FewShotClassifier(bundle).fit(sx[keep], y[keep]), qx)
    with pytest.raises(InputError, match=r"cannot forget '10'.*registered: \[0, 10, 40\]"):
        clf.forget("10")                               # the string is not the int class


def test_forget_unknown_label_names_the_registered_classes(case):
    b, (sx, sy, qx, _) = case
    clf = FewShotClassifier(b).fit(sx, sy)
    before = clf.decision_function(qx)
    with pytest.raises(InputError, match=r"cannot forget 'no-such-class': not a registered class") as err:
        clf.forget("no-such-class")
    for name in set(sy.tolist()):
        assert repr(name) in str(err.value)
    np.testing.assert_array_equal(clf.decision_function(qx), before)     # nothing changed


def test_forget_on_an_empty_classifier(bundle):
    with pytest.raises(InputError, match=r"cannot forget 'a': not a registered class; registered: \[\]"):
        FewShotClassifier(bundle).forget("a")


def test_forget_unknown_label_while_one_class_is_held_names_it(bundle, task):
    """With one class held there is no head, but the class is registered: the message must list it."""
    sx, sy, _, _ = task
    c0 = sy[0]
    clf = FewShotClassifier(bundle).partial_fit(sx[sy == c0], sy[sy == c0])
    with pytest.raises(InputError, match="cannot forget 'other'") as err:
        clf.forget("other")
    assert repr(str(c0)) in str(err.value), f"the registered class {c0!r} is missing from: {err.value}"


def test_forget_down_to_one_class_leaves_no_head(case):
    b, (sx, sy, qx, _) = case
    c0, c1, c2 = np.unique(sy)[:3]
    pick = np.isin(sy, [c0, c1, c2])
    clf = FewShotClassifier(b).fit(sx[pick], sy[pick])
    clf.forget(c2)
    assert clf.classes_.tolist() == [c0, c1]
    clf.forget(c0)
    assert clf.classes_ is None and clf.params_ is None
    assert clf.class_counts() == {c1: 5}
    with pytest.raises(InputError, match="at least two classes"):
        clf.predict(qx)
    with pytest.raises(InputError, match="at least two classes"):
        clf.predict(qx, reject_unknown=True)
    # a second class brings the head back, equal to fit on what is held
    clf.partial_fit(sx[sy == c2], sy[sy == c2])
    ref = np.isin(sy, [c1, c2])
    assert_same_classifier(clf, FewShotClassifier(b).fit(sx[ref], sy[ref]), qx)
    # forgetting everything leaves an empty classifier that can start again
    clf.forget(c1)
    clf.forget(c2)
    assert clf.class_counts() == {} and clf.classes_ is None
    clf.partial_fit(sx[pick], sy[pick])
    assert_same_classifier(clf, FewShotClassifier(b).fit(sx[pick], sy[pick]), qx)


def test_partial_fit_refuses_a_label_type_other_than_the_registered_one(bundle, task):
    sx, sy, qx, _ = task
    clf = FewShotClassifier(bundle).fit(sx, sy)
    before = clf.decision_function(qx)
    with pytest.raises(InputError, match="labels mix types with the classes already registered"):
        clf.partial_fit(sx[:5], [7] * 5)
    np.testing.assert_array_equal(clf.decision_function(qx), before)
    assert clf.class_counts() == {n: 5 for n in sorted(set(sy.tolist()))}
