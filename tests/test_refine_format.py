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
