"""Colour bundles (format version 2) in the Python runtime, and version-1 bundles answering as before.

``colour_bundle_dir`` (tests/conftest.py) is a real, untrained conv4 + proto bundle for
``[N, 3, 84, 84]`` photos; its answers are checked against its own raw ONNX graphs, not for accuracy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from edgemeta.contract.bundle import FORMAT_VERSION, read_bundle
from edgemeta.contract.preprocess import colour_spec, colour_to_grey
from edgemeta.errors import InputError
from edgemeta.runtime import Bundle, FewShotClassifier

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "mini-imagenet" / "sample"
V1_ANSWERS = Path(__file__).with_name("fixtures") / "v1-answers.json"


# ------------------------------------------------------------------------------ version 1 as before
@pytest.mark.parametrize("name", ["omniglot-conv4-proto", "omniglot-conv4"])
def test_shipped_version_1_bundles_answer_exactly_as_before(name):
    """The fixtures were computed by the version-1 reader (tests/fixtures/make_v1_answers.py): the
    preprocessed batches are bit for bit the same and the logits the same to float noise."""
    spec = importlib.util.spec_from_file_location("make_v1_answers", V1_ANSWERS.with_name("make_v1_answers.py"))
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    inputs, SUPPORT_LABELS = maker.inputs, maker.SUPPORT_LABELS
    path = ROOT / "models" / name
    if not (path / "manifest.json").is_file():  # pragma: no cover - shipped with the checkout
        pytest.skip(f"{path} is not in this checkout")
    manifest, _ = read_bundle(path)
    assert manifest["format_version"] == 1 and manifest["preprocess"]["channels"] == 1
    want = json.loads(V1_ANSWERS.read_text())[name]
    clf = FewShotClassifier(path, precision="fp32").fit(inputs()["support"], SUPPORT_LABELS)
    assert clf.bundle.channels == 1
    for case, images in inputs().items():
        x = clf.bundle.preprocess(images, ink="auto")
        assert hashlib.sha256(x.tobytes()).hexdigest() == want[case]["preprocessed_sha256"], case
        logits = clf.decision_function(images)
        np.testing.assert_allclose(logits, np.array(want[case]["logits"]), rtol=1e-6, atol=1e-6, err_msg=case)
        assert (logits.argmax(1) == np.array(want[case]["logits"]).argmax(1)).all()


def test_a_grey_bundle_still_turns_colour_into_grey(shipped_bundle):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (6, 40, 30, 3), dtype=np.uint8)
    got = shipped_bundle.preprocess(rgb, ink="high")
    assert got.shape == (6, 1, 28, 28)
    np.testing.assert_array_equal(got, shipped_bundle.preprocess(colour_to_grey(rgb), ink="high"))


# ------------------------------------------------------------------------------ the colour bundle
@pytest.fixture(scope="module")
def colour_bundle(colour_bundle_dir):
    return Bundle.load(colour_bundle_dir)


@pytest.fixture(scope="module")
def photos():
    """(support [15, 84, 84, 3] uint8, labels [15], queries [9, 84, 84, 3] uint8): 3 classes of real photos."""
    if not SAMPLE.is_dir():
        pytest.skip(f"mini-ImageNet sample photos not found at {SAMPLE}")
    classes = sorted(p for p in (SAMPLE / "test").iterdir() if p.is_dir())[:3]
    sx, sy, qx = [], [], []
    for c in classes:
        files = sorted(c.glob("*.jpg"))[:8]
        imgs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        sx += imgs[:5]
        sy += [c.name] * 5
        qx += imgs[5:8]
    return np.stack(sx), np.array(sy), np.stack(qx)


def raw_graph_logits(bundle_dir: Path, sx: np.ndarray, sy: np.ndarray, qx: np.ndarray) -> np.ndarray:
    """Logits straight from the three ONNX graphs for 84x84 uint8 RGB photos (v / 255, planes R, G, B)."""
    s = {n: ort.InferenceSession(str(bundle_dir / n), providers=["CPUExecutionProvider"])
         for n in ("backbone.onnx", "adapt.onnx", "classify.onnx")}
    emb = lambda x: s["backbone.onnx"].run(None, {"images": x.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)})[0]  # noqa: E731
    classes, y = np.unique(sy, return_inverse=True)
    (protos,) = s["adapt.onnx"].run(None, {"support_embeddings": emb(sx),
                                          "support_labels_onehot": np.eye(len(classes), dtype=np.float32)[y]})
    return s["classify.onnx"].run(None, {"embeddings": emb(qx), "prototypes": protos})[0]


def test_the_colour_bundle_is_version_2_with_the_colour_contract(colour_bundle_dir, colour_bundle):
    manifest, _ = read_bundle(colour_bundle_dir)
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["preprocess"] == colour_spec((84, 84)) and "ink" not in manifest["preprocess"]
    assert manifest["input"]["shape"] == [-1, 3, 84, 84]
    assert colour_bundle.channels == 3
    assert colour_bundle.preprocess(np.zeros((2, 84, 84, 3), np.uint8)).shape == (2, 3, 84, 84)


def test_fit_and_predict_on_photos_answer_as_the_raw_graphs(colour_bundle, colour_bundle_dir, photos):
    sx, sy, qx = photos
    clf = FewShotClassifier(colour_bundle).fit(sx, sy)
    np.testing.assert_allclose(clf.decision_function(qx), raw_graph_logits(colour_bundle_dir, sx, sy, qx),
                               rtol=1e-5, atol=1e-5)
    assert list(clf.classes_) == sorted(set(sy))
    swapped = clf.decision_function(qx[..., ::-1])                        # BGR planes: other answers
    assert not np.allclose(swapped, clf.decision_function(qx))


def test_every_input_form_of_the_same_photos_gives_the_same_answers(colour_bundle, photos):
    """uint8 and float arrays, a list of differently sized photos (2x upscaled, wide with margins),
    RGBA with opaque alpha, and grey photos as [H, W] (equal to grey replicated into RGB)."""
    sx, sy, qx = photos
    clf = FewShotClassifier(colour_bundle).fit(sx, sy)
    want = clf.decision_function(qx)
    np.testing.assert_array_equal(clf.decision_function(qx.astype(np.float32) / np.float32(255)), want)
    np.testing.assert_array_equal(clf.decision_function(list(qx)), want)
    mixed = []
    for k, q in enumerate(qx):
        if k % 3 == 0:
            mixed.append(q.repeat(2, axis=0).repeat(2, axis=1))          # 168 x 168
        elif k % 3 == 1:
            wide = np.full((84, 100, 3), 7, np.uint8)
            wide[:, 8:92] = q                                            # crop x0 = (100 - 84) // 2 = 8
            mixed.append(wide)
        else:
            mixed.append(np.concatenate([q, np.full((84, 84, 1), 255, np.uint8)], axis=2))
    np.testing.assert_array_equal(clf.decision_function(mixed), want)
    grey = colour_to_grey(qx)
    np.testing.assert_array_equal(clf.decision_function(list(grey)),
                                  clf.decision_function(np.repeat(grey[..., None], 3, axis=3)))


def test_ink_has_no_effect_on_a_colour_bundle(colour_bundle, photos):
    sx, sy, qx = photos
    answers = [FewShotClassifier(colour_bundle, ink=ink).fit(sx, sy).decision_function(qx)
               for ink in ("auto", "high", "low")]
    np.testing.assert_array_equal(answers[0], answers[1])
    np.testing.assert_array_equal(answers[0], answers[2])


def test_partial_fit_and_forget_on_photos(colour_bundle, photos):
    sx, sy, qx = photos
    full = FewShotClassifier(colour_bundle).fit(sx, sy)
    inc = FewShotClassifier(colour_bundle)
    for c in np.unique(sy):
        inc.partial_fit(list(sx[sy == c]), sy[sy == c])
    np.testing.assert_allclose(inc.decision_function(qx), full.decision_function(qx), rtol=1e-6, atol=1e-6)
    gone = np.unique(sy)[0]
    inc.forget(gone)
    keep = sy != gone
    np.testing.assert_allclose(inc.decision_function(qx),
                               FewShotClassifier(colour_bundle).fit(sx[keep], sy[keep]).decision_function(qx),
                               rtol=1e-6, atol=1e-6)
    assert gone not in inc.class_counts()


@pytest.mark.parametrize("ink", ["auto", "low"])
def test_save_and_load_round_trip_a_colour_classifier(colour_bundle, colour_bundle_dir, photos, tmp_path, ink):
    sx, sy, qx = photos
    clf = FewShotClassifier(colour_bundle, ink=ink).fit(sx, sy)
    clf.save(tmp_path / "photos.state")
    back = FewShotClassifier.load(colour_bundle_dir, tmp_path / "photos.state")
    assert back.ink == ink and back.class_counts() == clf.class_counts()
    np.testing.assert_array_equal(back.decision_function(qx), clf.decision_function(qx))


def test_colour_bundles_take_any_aspect_and_refuse_what_they_cannot_read(colour_bundle, photos):
    sx, sy, qx = photos
    clf = FewShotClassifier(colour_bundle).fit(sx, sy)
    thin = np.zeros((4, 300, 3), np.uint8)                                  # 75:1, centre-cropped
    assert clf.predict([thin]).shape == (1,) and clf.score([thin], [sy[0]]) in (0.0, 1.0)
    assert clf.partial_fit([thin], [sy[0]]).class_counts()[sy[0]] == 6
    with pytest.raises(InputError, match="at least 4x4"):
        clf.predict([np.zeros((3, 300, 3), np.uint8)])
    with pytest.raises(InputError, match="at most 50 megapixels"):
        clf.predict(np.broadcast_to(np.uint8(0), (1, 7072, 7072, 3)))
    with pytest.raises(InputError, match="dtype bool"):
        clf.predict(np.zeros((1, 84, 84, 3), bool))
