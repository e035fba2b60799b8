"""Unlabelled samples on the device: fit / partial_fit / add_unlabeled / forget with a pool of unlabelled
embeddings, its bound, and the state file that keeps it (round trip, encryption, hostile arrays).

Runs on the committed ``models/omniglot-conv4-proto-refine`` (the shipped proto bundle plus its fitted
refine graph), so it needs no data folder: the images are random strokes, the behaviour is exact.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from edgemeta.contract.bundle import read_bundle, write_bundle
from edgemeta.errors import InputError, StateError
from edgemeta.runtime import Bundle, FewShotClassifier
from edgemeta.runtime.state import MAGIC, StateData, encode_state

MODELS = Path(__file__).resolve().parents[1] / "models"
REFINE = MODELS / "omniglot-conv4-proto-refine"
PLAIN = MODELS / "omniglot-conv4-proto"


@pytest.fixture(scope="module")
def refine_bundle() -> Bundle:
    return Bundle.load(REFINE)


@pytest.fixture(scope="module")
def glyphs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Support ``[8, 28, 28]`` (4 classes x 2), labels, and 12 unlabelled images: noisy copies of each
    class's strokes (so the head assigns them) and 4 unrelated ones."""
    rng = np.random.default_rng(0)
    base = rng.random((4, 28, 28)) > 0.8
    flip = lambda x: np.logical_xor(x, rng.random(x.shape) > 0.97).astype(np.float32)  # noqa: E731
    support = np.stack([flip(base[c]) for c in range(4) for _ in range(2)])
    labels = np.repeat(np.array(["a", "b", "c", "d"]), 2)
    unlabeled = np.concatenate([np.stack([flip(base[c]) for c in range(4) for _ in range(2)]),
                                (rng.random((4, 28, 28)) > 0.8).astype(np.float32)])
    return support, labels, unlabeled


def clf(bundle) -> FewShotClassifier:
    return FewShotClassifier(bundle, ink="high")


def test_the_refine_bundle_is_format_3_and_the_shipped_one_is_untouched(refine_bundle):
    plain = Bundle.load(PLAIN)
    assert refine_bundle.manifest["format_version"] == 3 and plain.manifest["format_version"] == 1
    assert refine_bundle.refiner is not None and plain.refiner is None
    assert refine_bundle.refiner.max_unlabeled == 1000
    for name in plain.manifest["files"]:
        assert (REFINE / name).read_bytes() == (PLAIN / name).read_bytes(), name


def test_fit_with_unlabeled_runs_the_refine_graph_on_the_embeddings(refine_bundle, glyphs):
    sx, sy, ux = glyphs
    c = clf(refine_bundle).fit(sx, sy, unlabeled=ux)
    onehot = np.eye(4, dtype=np.float32)[np.unique(sy, return_inverse=True)[1]]
    s, u = c.embed(sx), c.embed(ux)
    want = refine_bundle.refiner.refine(s, onehot, u)["prototypes"]
    np.testing.assert_array_equal(c.params_["prototypes"], want)
    assert np.abs(want - refine_bundle.adapt(s, onehot)["prototypes"]).max() > 1e-3
    np.testing.assert_array_equal(clf(refine_bundle).fit_embeddings(s, sy, unlabeled=u).params_["prototypes"], want)
    assert c._pool.shape == (12, 64)


def test_partial_fit_and_add_unlabeled_in_parts_equal_one_fit(refine_bundle, glyphs):
    sx, sy, ux = glyphs
    whole = clf(refine_bundle).fit(sx, sy, unlabeled=ux)
    parts = clf(refine_bundle)
    parts.add_unlabeled(ux[:3])                                  # no class yet: held, no head
    assert parts.classes_ is None and parts._pool.shape[0] == 3
    parts.partial_fit(sx[:4], sy[:4], unlabeled=ux[3:7])
    parts.partial_fit(sx[4:], sy[4:])
    parts.add_unlabeled(ux[7:])
    np.testing.assert_array_equal(parts._pool, whole._pool)
    np.testing.assert_allclose(parts.params_["prototypes"], whole.params_["prototypes"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(parts.predict(ux), whole.predict(ux))


def test_fit_replaces_the_pool_and_without_unlabeled_equals_the_plain_head(refine_bundle, glyphs):
    sx, sy, ux = glyphs
    c = clf(refine_bundle).fit(sx, sy, unlabeled=ux)
    c.fit(sx, sy)
    assert c._pool.shape == (0, 64)
    np.testing.assert_array_equal(c.params_["prototypes"], clf(Bundle.load(PLAIN)).fit(sx, sy).params_["prototypes"])


def test_the_pool_keeps_the_most_recent_max_unlabeled(tmp_path, glyphs):
    manifest, files = read_bundle(REFINE)
    manifest = copy.deepcopy(manifest)
    manifest["refine"]["max_unlabeled"] = 5
    small = Bundle.load(write_bundle(tmp_path / "small", manifest, files))
    sx, sy, ux = glyphs
    c = clf(small).fit(sx, sy, unlabeled=ux[:4])
    c.add_unlabeled(ux[4:9])
    np.testing.assert_array_equal(c._pool, c.embed(ux[4:9]))
    ref = clf(small).fit(sx, sy, unlabeled=ux[:9])              # fit keeps the last 5 as well
    np.testing.assert_array_equal(ref._pool, c._pool)
    np.testing.assert_array_equal(ref.params_["prototypes"], c.params_["prototypes"])


def test_forget_takes_the_unlabelled_rows_its_class_claimed(refine_bundle, glyphs):
    sx, sy, ux = glyphs
    c = clf(refine_bundle).fit(sx, sy, unlabeled=ux)
    claimed = c.predict(ux) == "b"
    assert 0 < claimed.sum() < len(ux)
    c.forget("b")
    assert list(c.classes_) == ["a", "c", "d"]
    np.testing.assert_array_equal(c._pool, c.embed(ux[~claimed]))
    keep = sy != "b"
    ref = clf(refine_bundle).fit(sx[keep], sy[keep], unlabeled=ux[~claimed])
    np.testing.assert_allclose(c.params_["prototypes"], ref.params_["prototypes"], rtol=1e-6, atol=1e-6)


def test_forgetting_down_to_one_class_keeps_no_head_and_that_class_claims_the_rest(refine_bundle, glyphs):
    sx, sy, ux = glyphs
    c = clf(refine_bundle).fit(sx[:4], sy[:4], unlabeled=ux)
    c.forget("a")
    assert c.classes_ is None
    c.forget("b")
    assert c._pool.shape == (0, 64)


@pytest.mark.parametrize("key", [None, bytes(range(32))])
def test_save_and_load_keep_the_pool_exactly(refine_bundle, glyphs, tmp_path, key):
    pytest.importorskip("cryptography") if key else None
    sx, sy, ux = glyphs
    c = clf(refine_bundle).fit(sx, sy, unlabeled=ux)
    c.save(tmp_path / "s.state", key)
    back = FewShotClassifier.load(refine_bundle, tmp_path / "s.state", key)
    np.testing.assert_array_equal(back._pool, c._pool)
    np.testing.assert_array_equal(back.params_["prototypes"], c.params_["prototypes"])
    np.testing.assert_array_equal(back.predict(ux), c.predict(ux))
    raw = (tmp_path / "s.state").read_bytes()
    assert key is not None or b'"unlabeled"' in raw
    for img in ux:                                              # no raw sample is stored
        assert img.astype(np.float32).tobytes() not in raw


def test_a_state_without_a_pool_writes_no_unlabeled_array(refine_bundle, glyphs, tmp_path):
    sx, sy, _ = glyphs
    clf(refine_bundle).fit(sx, sy).save(tmp_path / "s.state")
    assert b'"unlabeled"' not in (tmp_path / "s.state").read_bytes()


def test_unlabeled_is_refused_by_bundles_that_cannot_refine(glyphs):
    sx, sy, ux = glyphs
    with pytest.raises(InputError, match=r"has no refine graph, so unlabeled samples cannot be used; add one with "
                                         r"`edgemeta add-refine"):
        clf(Bundle.load(PLAIN)).fit(sx, sy, unlabeled=ux)
    with pytest.raises(InputError, match="has no refine graph"):
        clf(Bundle.load(PLAIN)).add_unlabeled(ux)


def test_a_linear_head_bundle_refuses_unlabeled_naming_why(tmp_path, glyphs):
    torch = pytest.importorskip("torch")
    from edgemeta.contract.manifest import build_manifest
    from edgemeta.train.export import OPSET, graphs_from_model
    from edgemeta.train.model import FewShotModel

    torch.manual_seed(0)
    model = FewShotModel("conv4", "ridge", image_size=(28, 28)).eval()
    manifest = build_manifest(method="ridge", image_size=(28, 28), embedding_dim=model.embedding_dim,
                              head_outputs=model.method.param_names, head_hparams=model.method.hparams(),
                              provenance={"dataset": None}, parity={}, onnx_opset=OPSET,
                              torch_version=torch.__version__)
    ridge = Bundle.load(write_bundle(tmp_path / "ridge", manifest, graphs_from_model(model, (1, 28, 28))))
    sx, sy, ux = glyphs
    with pytest.raises(InputError, match=r"unlabeled samples refine prototypes; this bundle's method is 'ridge'"):
        clf(ridge).fit(sx, sy, unlabeled=ux)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 63), np.float32), r"shape \[3, 63\]"),
    (np.full((2, 64), np.nan, np.float32), r"expected finite numbers"),
    (np.zeros(64, np.float32), r"shape \[64\]"),
    (np.array([["x"] * 64]), r"dtype <U1"),
])
def test_bad_unlabelled_embeddings_are_an_input_error(refine_bundle, glyphs, bad, match):
    sx, sy, _ = glyphs
    c = clf(refine_bundle)
    s = c.embed(sx)
    with pytest.raises(InputError, match=match):
        c.fit_embeddings(s, sy, unlabeled=bad)


# ------------------------------------------------------------------- the state file's 'unlabeled' array

def _state_bytes(bundle: Bundle, arrays: list[tuple[str, str, list[int], bytes]]) -> bytes:
    """A version-2 state whose body holds exactly ``arrays`` (name, dtype, shape, raw bytes) with a correct
    checksum: only the array checks can refuse it."""
    index = {"arrays": [{"name": n, "dtype": d, "shape": s} for n, d, s, _ in arrays],
             "meta": {"bundle_id": bundle.identity, "labels": ["a", "b"], "method": "proto", "ink": "high"}}
    blob = json.dumps(index).encode()
    body = struct.pack("<I", len(blob)) + blob + b"".join(raw for *_, raw in arrays)
    header = {"format": "edgemeta-state", "version": 2, "encryption": "none", "payload_bytes": len(body),
              "payload_sha256": hashlib.sha256(body).hexdigest()}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body


def _arrays(pool: np.ndarray | None, dtype: str = "float32") -> list[tuple[str, str, list[int], bytes]]:
    emb = np.zeros((2, 64), "<f4")
    out = [("embeddings", "float32", [2, 64], emb.tobytes()),
           ("sample_class", "int64", [2], np.array([0, 1], "<i8").tobytes())]
    if pool is not None:
        out.append(("unlabeled", dtype, list(pool.shape), pool.tobytes()))
    return out


@pytest.mark.parametrize("pool, dtype, match", [
    (np.zeros((3, 65), "<f4"), "float32", r"unlabeled must be a float32 \[U, 64\] array"),
    (np.zeros((3, 32), "<i8"), "int64", r"unlabeled must be a float32 \[U, 64\] array"),
    (np.zeros(64, "<f4"), "float32", r"unlabeled must be a float32 \[U, 64\] array"),
    (np.full((2, 64), np.inf, "<f4"), "float32", r"unlabeled holds NaN or infinity"),
    (np.zeros((1001, 64), "<f4"), "float32", r"unlabeled embeddings have shape \[1001, 64\]; expected at most "
                                             r"\[1000, 64\]"),
])
def test_a_hostile_unlabeled_array_is_a_state_error(refine_bundle, tmp_path, pool, dtype, match):
    path = tmp_path / "s.state"
    path.write_bytes(_state_bytes(refine_bundle, _arrays(None)))
    assert FewShotClassifier.load(refine_bundle, path)._pool.shape == (0, 64)      # the same file without it loads
    path.write_bytes(_state_bytes(refine_bundle, _arrays(pool, dtype)))
    with pytest.raises(StateError, match=match):
        FewShotClassifier.load(refine_bundle, path)


def test_a_truncated_or_flipped_state_with_a_pool_is_refused(refine_bundle, glyphs, tmp_path):
    sx, sy, ux = glyphs
    path = tmp_path / "s.state"
    clf(refine_bundle).fit(sx, sy, unlabeled=ux).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(StateError, match="truncated"):
        FewShotClassifier.load(refine_bundle, path)
    flipped = bytearray(data)
    flipped[-10] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(StateError, match="checksum mismatch"):
        FewShotClassifier.load(refine_bundle, path)


def test_a_pool_saved_for_a_bundle_is_refused_by_one_that_cannot_refine(tmp_path):
    plain = Bundle.load(PLAIN)
    state = StateData(plain.identity, ["a", "b"], np.zeros((2, 64), np.float32), np.array([0, 1]), {},
                      {"method": "proto"}, unlabeled=np.zeros((3, 64), np.float32))
    (tmp_path / "s.state").write_bytes(encode_state(state))
    with pytest.raises(StateError, match=r"holds 3 unlabeled embeddings but .* has no refine graph"):
        FewShotClassifier.load(plain, tmp_path / "s.state")
