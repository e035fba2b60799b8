"""FewShotClassifier: the scikit-learn-style device API, on real never-seen Omniglot characters."""

from __future__ import annotations

import numpy as np
import pytest

from edgemeta.runtime import Bundle, FewShotClassifier, InputError, NotFittedError


@pytest.fixture(scope="module")
def raw_task(omniglot_root):
    """Full-resolution drawings (105x105, bool, True = ink) of 4 evaluation characters: 5 support + 5 query each."""
    with np.load(omniglot_root / "evaluation.npz") as z:
        X = z["images"][[3, 100, 250, 600]].astype(bool)              # [4, 20, 105, 105]
    sx, qx = X[:, :5].reshape(-1, 105, 105), X[:, 10:15].reshape(-1, 105, 105)
    y = np.repeat(["alpha", "beta", "gamma", "delta"], 5)
    return sx, y, qx, y.copy()


def test_fit_predict_with_string_labels(bundle, task):
    sx, sy, qx, qy = task
    clf = FewShotClassifier(bundle)
    assert clf.fit(sx, sy) is clf
    assert clf.classes_.tolist() == sorted(set(sy.tolist()))
    pred = clf.predict(qx)
    assert pred.shape == (25,) and set(pred.tolist()) <= set(sy.tolist())
    assert (pred == qy).mean() >= 0.8                     # 5-way 5-shot on never-seen characters (chance 0.2)
    proba = clf.predict_proba(qx)
    assert proba.shape == (25, 5) and proba.dtype.kind == "f"
    assert np.all(proba >= 0) and np.all(proba <= 1)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], pred)
    logits = clf.decision_function(qx)
    np.testing.assert_array_equal(logits.argmax(1), proba.argmax(1))


def test_support_images_are_classified_as_their_own_class(bundle, task):
    sx, sy, _, _ = task
    clf = FewShotClassifier(bundle).fit(sx, sy)
    assert (clf.predict(sx) == sy).mean() >= 0.9


def test_int_labels(bundle, task):
    sx, sy, qx, qy = task
    names = sorted(set(sy.tolist()))
    to_int = {n: v for n, v in zip(names, [40, 3, 17, -2, 1000])}
    clf = FewShotClassifier(bundle).fit(sx, [to_int[n] for n in sy])     # a plain list of ints
    assert clf.classes_.tolist() == sorted(to_int.values())
    assert clf.classes_.dtype.kind == "i"
    pred = clf.predict(qx)
    assert pred.dtype.kind == "i"
    # same decisions as with string labels, only renamed
    ref = FewShotClassifier(bundle).fit(sx, sy).predict(qx)
    np.testing.assert_array_equal(pred, [to_int[n] for n in ref])


def test_columns_follow_classes_whatever_the_label_order(bundle, task):
    sx, sy, qx, _ = task
    a = FewShotClassifier(bundle).fit(sx, sy)
    perm = np.random.default_rng(0).permutation(len(sy))
    b = FewShotClassifier(bundle).fit(sx[perm], sy[perm])                # same set, other order
    np.testing.assert_array_equal(a.classes_, b.classes_)
    np.testing.assert_allclose(a.predict_proba(qx), b.predict_proba(qx), rtol=1e-4, atol=1e-6)


def test_fit_replaces_earlier_classes(bundle, task):
    sx, sy, qx, _ = task
    clf = FewShotClassifier(bundle).fit(sx, sy)
    keep = np.isin(sy, clf.classes_[:2])
    clf.fit(sx[keep], sy[keep])
    assert clf.classes_.tolist() == sorted(set(sy[keep].tolist()))
    assert clf.predict_proba(qx).shape == (25, 2)


def test_list_of_differently_sized_images(bundle, task):
    sx, sy, qx, _ = task
    clf = FewShotClassifier(bundle).fit(sx, sy)
    # nearest-neighbour upsampling by 2 and 3 resizes back to exactly the same 28x28 pixels
    items = [np.kron(im, np.ones((1 + i % 3, 1 + i % 3), np.float32)) for i, im in enumerate(qx)]
    assert len({im.shape for im in items}) == 3
    np.testing.assert_array_equal(clf.predict(items), clf.predict(qx))
    np.testing.assert_allclose(clf.predict_proba(items), clf.predict_proba(qx), rtol=1e-6)
    # and fitting from a list works as well
    clf2 = FewShotClassifier(bundle).fit([np.kron(im, np.ones((2, 2), np.float32)) for im in sx], list(sy))
    np.testing.assert_allclose(clf2.decision_function(qx), clf.decision_function(qx), rtol=1e-6)


def test_full_resolution_raw_drawings(bundle, raw_task):
    """105x105 drawings as a device would capture them: bool, uint8 0..255, and dark ink on white paper."""
    sx, sy, qx, qy = raw_task
    clf = FewShotClassifier(bundle).fit(sx, sy)
    pred = clf.predict(qx)
    assert (pred == qy).mean() >= 0.75                       # 4-way 5-shot (chance 0.25)
    u8 = FewShotClassifier(bundle).fit(sx.astype(np.uint8) * 255, sy)
    np.testing.assert_array_equal(u8.decision_function(qx.astype(np.uint8) * 255), clf.decision_function(qx))
    paper = FewShotClassifier(bundle, ink="low").fit(~sx, sy)           # white paper, black strokes
    np.testing.assert_array_equal(paper.decision_function(~qx), clf.decision_function(qx))
    # the default ink="auto" finds the dark strokes on its own, image by image
    auto = FewShotClassifier(bundle).fit(~sx, sy)
    np.testing.assert_array_equal(auto.decision_function(~qx), clf.decision_function(qx))
    # forcing the wrong ink gives different (much worse) embeddings, not the same ones
    wrong = FewShotClassifier(bundle, ink="high").fit(~sx, sy)
    assert not np.allclose(wrong.decision_function(~qx), clf.decision_function(qx))


def test_loads_from_a_path(bundle_dir, task):
    sx, sy, qx, _ = task
    clf = FewShotClassifier(str(bundle_dir), threads=2).fit(sx, sy)
    assert isinstance(clf.bundle, Bundle)
    ref = FewShotClassifier(Bundle.load(bundle_dir)).fit(sx, sy)
    np.testing.assert_allclose(clf.decision_function(qx), ref.decision_function(qx), rtol=1e-5)


def test_bundle_embed_is_chunk_independent(bundle, lake_test):
    x = lake_test.images[:600]                                  # more than one 256-image chunk
    z = bundle.embed(x)
    assert z.shape == (600, bundle.embedding_dim) and z.dtype == np.float32
    np.testing.assert_allclose(z[300:310], bundle.embed(x[300:310]), rtol=1e-5, atol=1e-6)


# ---- errors a user can cause: InputError naming what was expected -------------------------------

def test_wrong_image_shape(bundle, task):
    sx, sy, qx, _ = task
    clf = FewShotClassifier(bundle)
    rgb = np.repeat(sx[:, None], 3, axis=1)                      # [N, 3, 28, 28]
    with pytest.raises(InputError, match=r"support images have shape \(25, 3, 28, 28\); expected \[N, H, W\] or \[N, 1, H, W\]"):
        clf.fit(rgb, sy)
    clf.fit(sx, sy)
    with pytest.raises(InputError, match=r"images have shape \(784,\); expected \[N, H, W\]"):
        clf.predict(qx[0].reshape(-1))
    with pytest.raises(InputError, match=r"images have shape \(28, 28\); expected \[N, H, W\]"):
        clf.predict(qx[0])                                       # one image needs a batch axis (or a list)
    with pytest.raises(InputError, match=r"shape \(25, 3, 28, 28\)"):
        clf.predict_proba(np.repeat(qx[:, None], 3, axis=1))


def test_nan_images(bundle, task):
    sx, sy, qx, _ = task
    bad = sx.copy()
    bad[3, 5, 5] = np.nan
    clf = FewShotClassifier(bundle)
    with pytest.raises(InputError, match=r"support images contain NaN or inf; expected finite values"):
        clf.fit(bad, sy)
    clf.fit(sx, sy)
    with pytest.raises(InputError, match="NaN or inf"):
        clf.predict(np.where(np.ones_like(qx, bool), np.inf, 0).astype(np.float32))


@pytest.mark.parametrize("empty", [np.zeros((0, 28, 28), np.float32), []])
def test_empty_support_set(bundle, empty):
    with pytest.raises(InputError, match="the support set is empty; expected at least one image per class"):
        FewShotClassifier(bundle).fit(empty, [])


def test_single_class(bundle, task):
    sx, sy, _, _ = task
    with pytest.raises(InputError, match=r"has 1 class \(\['only'\]\); expected at least 2 different labels"):
        FewShotClassifier(bundle).fit(sx[:5], ["only"] * 5)


def test_labels_length_mismatch(bundle, task):
    sx, sy, _, _ = task
    with pytest.raises(InputError, match="got 25 images but 24 labels; expected one label per image"):
        FewShotClassifier(bundle).fit(sx, sy[:-1])
    with pytest.raises(InputError, match=r"labels have shape \(5, 5\); expected a 1-D sequence"):
        FewShotClassifier(bundle).fit(sx, sy.reshape(5, 5))


@pytest.mark.parametrize("labels", [[None] * 25, [0.5] * 25, [True, False] * 12 + [True]])
def test_labels_of_other_types(bundle, task, labels):
    with pytest.raises(InputError, match=r"labels have dtype .*; expected all ints or all strings"):
        FewShotClassifier(bundle).fit(task[0], labels)


def test_mixed_int_and_string_labels_are_refused(bundle, task):
    """``check_labels`` promises to refuse mixed labels; numpy silently turns [1, 'a'] into strings,
    so predictions would come back as '1' instead of 1."""
    sx = task[0][:10]
    with pytest.raises(InputError, match="expected all ints or all strings"):
        FewShotClassifier(bundle).fit(sx, [1, "a"] * 5)


def test_predict_before_fit(bundle, task):
    clf = FewShotClassifier(bundle)
    for call in (clf.predict, clf.predict_proba, clf.decision_function, lambda x: clf.score(x, task[3])):
        with pytest.raises(NotFittedError, match=r"not fitted yet; call fit\(images, labels\) with at least two"):
            call(task[2])
    clf.partial_fit(task[0][:5], task[1][:5])                    # one class held: not enough to tell apart
    with pytest.raises(InputError, match=r"holds only 1 class \(\[.+\]\); expected at least two classes .*add another with partial_fit"):
        clf.predict(task[2])


def test_failed_fit_keeps_the_previous_classes(bundle, task):
    sx, sy, qx, _ = task
    clf = FewShotClassifier(bundle).fit(sx, sy)
    before = clf.predict_proba(qx)
    with pytest.raises(InputError):
        clf.fit(sx[:5], ["only"] * 5)
    np.testing.assert_array_equal(clf.predict_proba(qx), before)
