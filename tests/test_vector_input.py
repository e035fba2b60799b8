"""Vector inputs: the runtime's checks of ``[N, D]`` arrays, the manifest rules of the ``vector_input`` and
``regression`` sections (accepted, refused in a version-2 manifest, cross-field rules), and a
vector-input classifier bundle (proto head over an MLP) through FewShotClassifier."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from edgemeta.contract.bundle import manifest_digest, read_bundle, seal_manifest
from edgemeta.contract.manifest_schema import validate_manifest, writer_version
from edgemeta.contract.vector_input import check_vectors
from edgemeta.errors import BundleError, InputError

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = MODELS / "sinusoid-metasgd"


def test_check_vectors_accepts_numbers_and_names_the_bad_row():
    np.testing.assert_array_equal(check_vectors([[1, 2], [3, 4]], 2), np.array([[1, 2], [3, 4]], np.float32))
    assert check_vectors(np.zeros((3, 2), np.int64), 2).dtype == np.float32
    with pytest.raises(InputError, match="row 2 holds NaN"):
        check_vectors(np.array([[0.0, 1], [2, 3], [np.nan, 1]]), 2)
    with pytest.raises(InputError, match="row 1 holds a value beyond"):
        check_vectors(np.array([[0.0, 1], [1e300, 3]]), 2)
    with pytest.raises(InputError, match="reshape"):
        check_vectors(np.zeros(2), 2)
    with pytest.raises(InputError, match="3 columns"):
        check_vectors(np.zeros((1, 3)), 2)
    with pytest.raises(InputError, match="booleans"):
        check_vectors(np.zeros((1, 2), bool), 2)
    with pytest.raises(InputError, match="ragged"):
        check_vectors([[1, 2], [3]], 2)
    with pytest.raises(InputError, match="no rows"):
        check_vectors(np.zeros((0, 2)), 2)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return read_bundle(SHIPPED)[0]


def _resealed(m: dict) -> dict:
    m = copy.deepcopy(m)
    m["integrity"] = {"manifest_sha256": manifest_digest(m)}
    return m


def test_shipped_regression_manifest_is_version_3_and_valid(manifest):
    assert manifest["format_version"] == 3 == writer_version(manifest)
    validate_manifest(copy.deepcopy(manifest))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format_version=2), "needs format version 3"),
    (lambda m: m["input"].update(shape=[-1, 2]), "input.shape"),
    (lambda m: m["input"].update(shape=[-1, 1, 28, 28]), "input.shape"),
    (lambda m: m["vector_input"].update(normalization="none"), "vector_input.normalization"),
    (lambda m: m["vector_input"].update(feature_names=["a", "b"]), "feature_names"),
    (lambda m: m["regression"].update(uncertainty="predictive_variance"), "regression.uncertainty"),
    (lambda m: m["regression"].update(outputs=0), "regression.outputs"),
    (lambda m: m["head"].update(outputs=["weight", "bias"]), "head.outputs"),
    (lambda m: m["graphs"].update(predict="classify.onnx"), "graphs.predict"),
    (lambda m: m["validation"].update(k5={"accuracy": 50}), "validation.k5"),
    (lambda m: m.pop("regression"), "classify"),
    (lambda m: m.update(method="proto") or m["head"].update(method="proto"), "method"),
])
def test_broken_vector_or_regression_manifest_is_refused(manifest, edit, message):
    m = copy.deepcopy(manifest)
    edit(m)
    with pytest.raises(BundleError, match=message.replace(".", r"\.")):
        validate_manifest(_resealed(m))


def test_alpaca_needs_the_regression_section(manifest):
    m = copy.deepcopy(manifest)
    m["method"] = m["head"]["method"] = "alpaca"
    m["head"]["outputs"] = ["weight", "covariance", "noise_variance"]
    m["regression"]["uncertainty"] = "predictive_variance"
    validate_manifest(_resealed(m))
    del m["regression"]
    with pytest.raises(BundleError):
        validate_manifest(_resealed(m))


def _vector_classifier_bundle(tmp_path: Path) -> Path:
    """A proto bundle whose backbone is a small random MLP over 4-number vectors (normalisation in the graph)."""
    torch = pytest.importorskip("torch")
    from edgemeta.contract.bundle import write_bundle
    from edgemeta.contract.manifest_schema import GRAPH_FILES
    from edgemeta.train.export import _AdaptGraph, _ClassifyGraph, _to_onnx
    from edgemeta.train.methods.proto import Proto
    from edgemeta.train.regression.features import VectorFeatures

    torch.manual_seed(0)
    feats = VectorFeatures(4, (16,), mean=[1.0, 0.0, 0.0, 0.0], std=[2.0, 1.0, 1.0, 1.0]).eval()
    method = Proto()
    x, s = torch.randn(5, 4), torch.randn(6, feats.dim)
    onehot = torch.nn.functional.one_hot(torch.arange(6) % 2, 2).float()
    with torch.no_grad():
        params = method.adapt(s, onehot)
    files = {
        GRAPH_FILES["backbone"]: _to_onnx(feats, (x,), ["inputs"], ["embeddings"], {"inputs": {0: "N"}, "embeddings": {0: "N"}}),
        GRAPH_FILES["adapt"]: _to_onnx(_AdaptGraph(method), (s, onehot), ["support_embeddings", "support_labels_onehot"],
                                       ["prototypes"], {"support_embeddings": {0: "S"}, "support_labels_onehot": {0: "S", 1: "C"},
                                                        "prototypes": {0: "C"}}),
        GRAPH_FILES["classify"]: _to_onnx(_ClassifyGraph(method), (s, params["prototypes"]), ["embeddings", "prototypes"],
                                          ["logits"], {"embeddings": {0: "N"}, "prototypes": {0: "C"}, "logits": {0: "N", 1: "C"}}),
    }
    manifest = {"method": "proto", "input": {"name": "inputs", "kind": "vectors", "shape": [-1, 4], "dtype": "float32"},
                "preprocess": {"kind": "vectors"}, "vector_input": {"dim": 4, "normalization": "in_graph"},
                "embedding": {"name": "embeddings", "dim": feats.dim},
                "head": {"method": "proto", "outputs": ["prototypes"], "scale": 1.0}, "graphs": dict(GRAPH_FILES),
                "limits": {"min_ways": 2, "max_ways": 100, "min_shots": 1}, "provenance": {"dataset": None},
                "validation": {}, "integrity": {}}
    assert seal_manifest(manifest, files)["format_version"] == 3
    return write_bundle(tmp_path / "vec", manifest, files)


def test_classifier_takes_a_vector_input_bundle(tmp_path):
    from edgemeta.runtime.classifier import FewShotClassifier

    path = _vector_classifier_bundle(tmp_path)
    assert json.loads((path / "manifest.json").read_text())["format_version"] == 3
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0, 0, 0], [-5.0, 0, 0, 0], [0, 0, 6.0, 0]])
    xs = np.concatenate([c + 0.3 * rng.normal(size=(3, 4)) for c in centres])
    ys = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    clf = FewShotClassifier(path).fit(xs, ys)
    xq = np.concatenate([c + 0.3 * rng.normal(size=(5, 4)) for c in centres])
    assert (clf.predict(xq) == np.repeat(["a", "b", "c"], 5)).mean() >= 0.9
    assert clf.predict_proba(xq).shape == (15, 3)
    clf.save(tmp_path / "v.state")
    back = FewShotClassifier.load(path, tmp_path / "v.state")
    np.testing.assert_array_equal(back.predict(xq), clf.predict(xq))
    for bad in (np.zeros((2, 3)), np.zeros((2, 28, 28)), [[np.nan] * 4, [0.0] * 4], "x"):
        with pytest.raises(InputError):
            clf.predict(bad)
