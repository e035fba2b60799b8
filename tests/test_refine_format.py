"""Bundle format version 3: the writer writes the lowest version that expresses a bundle; readers accept
1, 2 and 3; a version-3 section (``refine``) in a version-1 or version-2 manifest is refused."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from edgemeta.contract.bundle import MANIFEST, manifest_digest, read_bundle, seal_manifest, verify
from edgemeta.contract.manifest_schema import V3_SECTIONS, schema_paths, writer_version
from edgemeta.errors import BundleError

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "omniglot-conv4-proto"
REFINE = {"graph": "refine.onnx", "rule": "masked_soft_kmeans", "outputs": ["prototypes"], "max_unlabeled": 1000}


def _shipped() -> tuple[dict, dict[str, bytes]]:
    manifest, files = read_bundle(SHIPPED)
    return manifest, dict(files)


def _with_refine(section: dict | None = None, graph: bytes = b"graph bytes") -> tuple[dict, dict[str, bytes]]:
    """The shipped proto manifest plus a refine section and a listed refine.onnx, sealed as the writer seals it."""
    manifest, files = _shipped()
    manifest = copy.deepcopy(manifest)
    manifest["refine"] = dict(REFINE if section is None else section)
    files["refine.onnx"] = graph
    return seal_manifest(manifest, files), files


def _verify(manifest: dict, files: dict[str, bytes]) -> dict:
    import json
    return verify({**files, MANIFEST: json.dumps(manifest).encode()}, "b")


def _reseal(manifest: dict) -> dict:
    manifest = dict(manifest)
    manifest["integrity"] = {"manifest_sha256": manifest_digest(manifest)}
    return manifest


def test_a_plain_bundle_is_written_as_version_2_and_one_with_a_section_as_version_3():
    manifest, files = _shipped()
    assert manifest["format_version"] == 1                      # shipped, never re-exported
    assert seal_manifest(manifest, files)["format_version"] == 2 == writer_version(manifest)
    sealed, files = _with_refine()
    assert sealed["format_version"] == 3 == writer_version(sealed)
    assert _verify(sealed, files)["refine"] == REFINE


@pytest.mark.parametrize("version", [1, 2])
def test_a_refine_section_in_a_version_1_or_2_manifest_is_refused(version):
    sealed, files = _with_refine()
    sealed["format_version"] = version
    with pytest.raises(BundleError, match=rf"manifest section refine needs format version 3, but format_version "
                                          rf"is {version}"):
        _verify(_reseal(sealed), files)


def test_a_version_3_manifest_without_a_section_reads_as_version_2():
    manifest, files = _shipped()
    manifest = seal_manifest(manifest, files)
    manifest["format_version"] = 3
    assert _verify(_reseal(manifest), files)["format_version"] == 3


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.update(graph="other.onnx"), r"refine.graph must be 'refine.onnx'"),
    (lambda r: r.update(rule="kmeans"), r"refine.rule must be 'masked_soft_kmeans'"),
    (lambda r: r.update(outputs=["weight", "bias"]), r"refine.outputs is \['weight', 'bias'\]; expected head.outputs"),
    (lambda r: r.update(max_unlabeled=0), r"refine.max_unlabeled must be an integer in \[1, 1000000\]"),
    (lambda r: r.update(max_unlabeled=1000.0), r"refine.max_unlabeled must be an integer"),
    (lambda r: r.update(steps=True), r"refine.steps must be an integer in \[1, 16\]"),
    (lambda r: r.pop("max_unlabeled"), r"manifest field refine lacks required fields \['max_unlabeled'\]"),
    (lambda r: r.update(distractor=[1, 2]), r"refine.distractor must be an object"),
])
def test_a_broken_refine_section_is_refused_naming_the_field(edit, match):
    section = dict(REFINE)
    edit(section)
    sealed, files = _with_refine(section)
    with pytest.raises(BundleError, match=match):
        _verify(sealed, files)


def test_a_refine_section_whose_graph_is_not_listed_or_whose_method_is_not_proto_is_refused():
    sealed, files = _with_refine()
    files.pop("refine.onnx")
    with pytest.raises(BundleError, match=r"must list the refine graph \(refine.onnx\) under files"):
        _verify(seal_manifest(sealed, files), files)
    sealed, files = _with_refine()
    sealed["method"] = sealed["head"]["method"] = "ridge"
    sealed["head"]["outputs"] = sealed["refine"]["outputs"] = ["weight", "bias"]
    with pytest.raises(BundleError, match=r"manifest section refine needs method 'proto' \(it refines prototypes\)"):
        _verify(_reseal(sealed), files)


def test_every_version_3_section_field_is_named_in_the_format_page():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "bundle-format.md").read_text()
    paths = [p for p in schema_paths() if p.split(".")[0] in V3_SECTIONS]
    assert "refine.max_unlabeled" in paths
    assert not [p for p in paths if f"`{p}`" not in doc]


# ----------------------------------------------------------------- the refine graph itself, at load

REFINE_BUNDLE = SHIPPED.parent / "omniglot-conv4-proto-refine"


def _rewrite(tmp_path: Path, graph: bytes | None = None, edit=None, reseal: bool = True) -> Path:
    """A copy of the shipped refine bundle with ``refine.onnx`` replaced (manifest resealed like an exporter
    would, so only the graph checks can refuse it) or its manifest edited."""
    import json
    import shutil

    from edgemeta.contract.bundle import sha256_bytes

    out = tmp_path / "b"
    shutil.copytree(REFINE_BUNDLE, out)
    m = json.loads((out / MANIFEST).read_text())
    if graph is not None:
        (out / "refine.onnx").write_bytes(graph)
        if reseal:
            m["files"]["refine.onnx"] = {"sha256": sha256_bytes(graph), "bytes": len(graph)}
    if edit is not None:
        edit(m)
    if reseal:
        m["integrity"] = {"manifest_sha256": manifest_digest(m)}
    (out / MANIFEST).write_text(json.dumps(m))
    return out


def _graph(module) -> bytes:
    from edgemeta.train.refine_export import refine_graph

    return refine_graph(module, 64)


def test_the_shipped_refine_bundle_loads_and_its_graph_is_checked(tmp_path):
    from edgemeta.runtime import Bundle

    assert Bundle.load(REFINE_BUNDLE).refiner is not None
    data = bytearray((REFINE_BUNDLE / "refine.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    with pytest.raises(BundleError, match=r"sha256 of refine.onnx does not match"):
        Bundle.load(_rewrite(tmp_path, bytes(data), reseal=False))


@pytest.mark.parametrize("what, graph, match", [
    ("garbage", lambda: b"\x08\x07not onnx" * 20, r"onnxruntime cannot load refine.onnx"),
    ("truncated", lambda: (REFINE_BUNDLE / "refine.onnx").read_bytes()[:500], r"onnxruntime cannot load refine.onnx"),
    ("adapt.onnx in its place", lambda: (REFINE_BUNDLE / "adapt.onnx").read_bytes(),
     r"refine.onnx inputs/outputs \['support_embeddings', 'support_labels_onehot'\] do not follow the contract"),
    ("empty", lambda: b"", r"onnxruntime cannot load refine.onnx"),
])
def test_a_hostile_refine_graph_is_a_bundle_error(tmp_path, what, graph, match):
    from edgemeta.runtime import Bundle

    with pytest.raises(BundleError, match=match):
        Bundle.load(_rewrite(tmp_path, graph()))


def test_a_refine_graph_that_disagrees_with_adapt_is_refused(tmp_path):
    """A graph of the contract whose prototypes without unlabelled samples are not the class means (another
    export's graph, or an altered one with its checksums recomputed)."""
    import torch

    from edgemeta.runtime import Bundle
    from edgemeta.train.soft_kmeans import MaskedSoftKMeans

    class Scaled(MaskedSoftKMeans):
        def forward(self, support, onehot, unlabeled):
            return 1.5 * super().forward(support, onehot, unlabeled)

    with pytest.raises(BundleError, match=r"refine.onnx without unlabelled samples differs from adapt.onnx"):
        Bundle.load(_rewrite(tmp_path, _graph(Scaled(1.0).eval())))
    torch.manual_seed(0)
    assert Bundle.load(_rewrite(tmp_path / "ok", _graph(MaskedSoftKMeans(1.0).eval()))).refiner is not None


def test_an_oversized_max_unlabeled_or_wrong_type_is_refused(tmp_path):
    from edgemeta.runtime import Bundle

    with pytest.raises(BundleError, match=r"refine.max_unlabeled must be an integer in \[1, 1000000\]"):
        Bundle.load(_rewrite(tmp_path, edit=lambda m: m["refine"].update(max_unlabeled=10**7)))
    with pytest.raises(BundleError, match=r"refine.graph must be 'refine.onnx'"):
        Bundle.load(_rewrite(tmp_path / "2", edit=lambda m: m["refine"].update(graph=["refine.onnx"])))
