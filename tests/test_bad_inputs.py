"""Bad inputs a device user can cause: each an InputError whose message names what was expected.

Complements the cases in ``test_runtime.py`` (RGB batches, a 1-D image, one 2-D image without a
batch axis, NaN in fit, inf in predict, empty support set, one class, label mismatches).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemeta.runtime import FewShotClassifier, InputError


@pytest.fixture(scope="module")
def fitted(bundle, task):
    return FewShotClassifier(bundle).fit(task[0], task[1])


SIZE_MSG = r"expected 2-D images at least 4x4 with an aspect ratio within 4:1"


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.int8, np.complex64])
def test_wrong_dtype(fitted, task, dtype):
    qx = (task[2] * 255).astype(dtype)
    with pytest.raises(InputError, match=rf"images have dtype {np.dtype(dtype)}; expected bool, uint8 \(0..255\) "
                                         r"or float in \[0, 1\]"):
        fitted.predict(qx)


def test_strings_are_not_images(fitted):
    with pytest.raises(InputError, match=r"have dtype <U\d+; expected bool, uint8"):
        fitted.predict(np.full((2, 28, 28), "x"))


def test_float_images_outside_unit_range(fitted, task):
    with pytest.raises(InputError, match=r"images have values in \[0, 255\]; expected float images scaled to \[0, 1\]"):
        fitted.predict(task[2] * 255.0)
    with pytest.raises(InputError, match=r"values in \[-1, 1\]"):
        fitted.predict(task[2] * 2.0 - 1.0)


def test_float64_in_unit_range_is_fine(fitted, task):
    np.testing.assert_allclose(fitted.decision_function(task[2].astype(np.float64)),
                               fitted.decision_function(task[2]), rtol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_in_partial_fit_and_lists(bundle, fitted, task, bad):
    sx, sy, qx, _ = task
    x = sx.copy()
    x[0, 0, 0] = bad
    with pytest.raises(InputError, match=r"support images contain NaN or inf; expected finite values in \[0, 1\]"):
        FewShotClassifier(bundle).partial_fit(x, sy)
    items = [im.copy() for im in qx[:3]]
    items[2][10, 10] = bad
    with pytest.raises(InputError, match=r"images\[2\] contain NaN or inf; expected finite values"):
        fitted.predict_proba(items)                                 # the message names the list item


@pytest.mark.parametrize("empty", [np.zeros((0, 28, 28), np.float32), np.zeros((0, 1, 28, 28), np.uint8), []])
def test_empty_queries(fitted, empty):
    for call in (fitted.predict, fitted.predict_proba, fitted.decision_function):
        with pytest.raises(InputError, match="images are empty; expected at least one image"):
            call(empty)


@pytest.mark.parametrize("empty", [np.zeros((0, 28, 28), np.float32), []])
def test_empty_partial_fit(bundle, empty):
    with pytest.raises(InputError, match="the support set is empty; expected at least one image per class"):
        FewShotClassifier(bundle).partial_fit(empty, [])


def test_one_class_fit_with_int_labels_names_it(bundle, task):
    with pytest.raises(InputError, match=r"the support set has 1 class \(\[7\]\); expected at least 2 different labels"):
        FewShotClassifier(bundle).fit(task[0][:3], [7, 7, 7])


def test_flattened_images_in_a_list(fitted, task):
    qx = task[2]
    with pytest.raises(InputError, match=rf"images\[0\] have size 1x784; {SIZE_MSG}.*flattened or transposed"):
        fitted.predict([im.reshape(1, 784) for im in qx[:2]])         # [1, 784] rows in a list
    with pytest.raises(InputError, match=r"images\[0\] has shape \(784,\); expected a 2-D single-channel image"):
        fitted.predict([im.reshape(-1) for im in qx[:2]])
    with pytest.raises(InputError, match=r"images\[1\] has shape \(3, 28, 28\); expected a 2-D single-channel image"):
        fitted.predict([qx[0], np.stack([qx[1]] * 3)])                  # an RGB item among grey ones


def test_flattened_batches(fitted, task):
    qx = task[2]
    with pytest.raises(InputError, match=r"images have shape \(25, 784\); expected \[N, H, W\] or \[N, 1, H, W\]"):
        fitted.predict(qx.reshape(25, 784))
    with pytest.raises(InputError, match=rf"images have size 1x784; {SIZE_MSG}"):
        fitted.predict(qx.reshape(25, 1, 784))                        # [N, 1, 784] reads as 1x784 images
    with pytest.raises(InputError, match=r"support images have shape \(5, 5, 28, 28\); expected \[N, H, W\]"):
        FewShotClassifier(fitted.bundle).fit(task[0].reshape(5, 5, 28, 28), task[1])


@pytest.mark.parametrize("shape", [(2, 2), (3, 28), (28, 200), (1, 1)])
def test_tiny_or_elongated_images(fitted, shape):
    with pytest.raises(InputError, match=rf"images have size {shape[0]}x{shape[1]}; {SIZE_MSG}"):
        fitted.predict(np.zeros((2, *shape), np.float32))
    with pytest.raises(InputError, match=rf"support images have size {shape[0]}x{shape[1]}"):
        FewShotClassifier(fitted.bundle).fit(np.zeros((2, *shape), np.float32), ["a", "b"])


def test_bad_ink_setting(bundle, task):
    with pytest.raises(InputError, match=r"ink must be 'auto' \(decided per image\), 'high' \(bright strokes\) or 'low' \(dark strokes\), got 'dark'"):
        FewShotClassifier(bundle, ink="dark").fit(task[0], task[1])


def test_bad_input_leaves_the_classifier_unchanged(bundle, task):
    sx, sy, qx, _ = task
    clf = FewShotClassifier(bundle).fit(sx, sy)
    before = clf.decision_function(qx)
    counts = clf.class_counts()
    for images, labels in [(sx * 255.0, sy), (sx[:, :2, :2], sy), ([], []), (sx, sy[:3])]:
        with pytest.raises(InputError):
            clf.partial_fit(images, labels)
    assert clf.class_counts() == counts
    np.testing.assert_array_equal(clf.decision_function(qx), before)


# ---- every public entry point, every kind of non-image: an InputError naming what was expected -----------

SHAPES_MSG = r"expected \[N, H, W\] or \[N, 1, H, W\] grey, \[N, H, W, 3\] RGB or \[N, H, W, 4\] RGBA images"
NOT_IMAGES = [
    (None, r"is None; " + SHAPES_MSG),
    (5, r"is a int; " + SHAPES_MSG),
    (2.5, r"is a float; " + SHAPES_MSG),
    (np.uint8(0), r"is a uint8; " + SHAPES_MSG),
    ("photo.png", r"is a str; " + SHAPES_MSG),
    (b"\x89PNG", r"is a bytes; " + SHAPES_MSG),
    ({"a": np.zeros((28, 28))}, r"is a dict; " + SHAPES_MSG),
    ([[[0.0] * 28] * 28, [[0.0] * 27] * 28], None),                  # two nested-list images: fine, checked below
    ([[[0.0] * 28, [0.0] * 27] + [[0.0] * 28] * 26], r"\[0\] is a ragged nested sequence .*expected a 2-D image"),
    ([None], r"\[0\] is None; expected a 2-D image array"),
    (["no-such.png", "no-such.png"], r"no-such.png: no such file or folder; expected an image file"),   # paths
    (np.array([np.zeros((28, 28)), np.zeros((30, 30))], dtype=object), r"have shape \(2,\); " + SHAPES_MSG),
    (np.zeros((2, 28, 28), dtype=object), r"dtype object; expected bool, uint8 \(0..255\) or float in \[0, 1\]"),
    (np.zeros((2, 28, 28), np.complex128), r"dtype complex128; expected bool, uint8"),
    (np.array(0.5), r"have shape \(\); " + SHAPES_MSG),
    (np.zeros(784, np.float32), r"have shape \(784,\); " + SHAPES_MSG),
    (np.zeros((28, 28), np.float32), r"have shape \(28, 28\); .*one image\? pass \[image\] or image\[None\]"),
    (np.zeros((1, 1, 1, 28, 28), np.float32), r"have shape \(1, 1, 1, 28, 28\); " + SHAPES_MSG),
    (np.zeros((0, 28, 28), np.uint8), r"(images are|the support set is) empty; expected at least one image"),
    (np.full((2, 28, 28), np.nan), r"contain NaN or inf; expected finite values in \[0, 1\]"),
]


@pytest.mark.parametrize("bad,msg", NOT_IMAGES, ids=[f"{type(b).__name__}{i}" for i, (b, _) in enumerate(NOT_IMAGES)])
def test_every_entry_point_refuses_non_images(bundle, fitted, bad, msg):
    fresh = FewShotClassifier(bundle)
    calls = {"fit": lambda x: fresh.fit(x, ["a", "b"]), "partial_fit": lambda x: fresh.partial_fit(x, ["a", "b"]),
             "predict": fitted.predict, "predict_proba": fitted.predict_proba,
             "decision_function": fitted.decision_function, "embed": fitted.embed,
             "score": lambda x: fitted.score(x, ["a", "b"])}
    for name, call in calls.items():
        if msg is None:                                            # a valid nested-list batch
            if name in ("embed", "predict", "decision_function", "predict_proba"):
                assert len(call(bad)) == 2
            continue
        with pytest.raises(InputError, match=msg):
            call(bad)
    assert fresh.class_counts() == {}


@pytest.mark.parametrize("labels,msg", [
    (None, r"labels have shape \(\); expected a 1-D sequence"),
    ("ab", r"labels have shape \(\); expected a 1-D sequence"),
    ([1.5, 2.5], r"labels have dtype float64; expected all ints or all strings"),
    ([[1], [2, 3]], r"labels are a ragged nested sequence; expected a 1-D sequence"),
    ({"a": 1, "b": 2}, r"labels have shape \(\); expected a 1-D sequence"),
])
def test_bad_labels(bundle, task, labels, msg):
    with pytest.raises(InputError, match=msg):
        FewShotClassifier(bundle).fit(task[0][:2], labels)


def test_ensemble_follows_the_same_input_rules(bundle_dir, task):
    from edgemeta.runtime import HeadEnsemble, NotFittedError

    ens = HeadEnsemble([(bundle_dir, 1.0)])
    with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
        ens.predict(task[2])
    with pytest.raises(InputError, match=r"support images is None; " + SHAPES_MSG):
        ens.fit(None, task[1])
    ens.fit(1.0 - task[0], task[1])                                 # dark ink on white paper: ink="auto"
    for bad, msg in [(5, r"is a int"), (np.zeros((2, 28, 28), object), "dtype object"), ([None], r"\[0\] is None")]:
        with pytest.raises(InputError, match=msg):
            ens.predict_proba(bad)
    np.testing.assert_array_equal(ens.predict(task[2]), FewShotClassifier(bundle_dir).fit(*task[:2]).predict(task[2]))


def test_oversized_image_is_refused_before_any_work(fitted):
    big = np.broadcast_to(np.uint8(255), (1, 20000, 20000))           # 400 megapixels, no memory behind it
    with pytest.raises(InputError, match=r"size 20000x20000 \(400 megapixels\); expected at most 50 megapixels"):
        fitted.predict(big)
    with pytest.raises(InputError, match=r"images\[1\] have size 20000x20000"):
        fitted.predict([np.zeros((28, 28), np.uint8), big[0]])


def test_badly_sized_image_files_are_named_by_their_path(shipped_bundle, tmp_path):
    from PIL import Image

    good, thin, tiny = tmp_path / "good.png", tmp_path / "thin strip.png", tmp_path / "tiny.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(good)
    Image.fromarray(np.zeros((1, 1000), np.uint8)).save(thin)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tiny)
    clf = FewShotClassifier(shipped_bundle)
    with pytest.raises(InputError, match=rf"support images\[3\] \({tiny}\) have size 3x3; {SIZE_MSG}"):
        clf.fit([good, good, str(good), tiny], ["a", "a", "b", "b"])
    clf.fit([good, good], ["a", "b"])
    with pytest.raises(InputError, match=rf"images\[2\] \({thin}\) have size 1x1000; {SIZE_MSG}"):
        clf.predict([good, good, str(thin)])
    with pytest.raises(InputError, match=rf"images\[1\] have size 3x3; {SIZE_MSG}"):   # bytes: no path to name
        clf.predict([good, tiny.read_bytes()])
