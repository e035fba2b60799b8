"""The bundle contract: an exported bundle verifies; any altered, missing or foreign bundle is refused."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgemeta.contract.bundle import (FORMAT_NAME, FORMAT_VERSION, GRAPH_FILES, MANIFEST, manifest_digest,
                                      read_bundle, sha256_bytes, verify, write_bundle, zip_bundle)
from edgemeta.errors import BundleError
from edgemeta.runtime import Bundle, FewShotClassifier


def load_manifest(d: Path) -> dict:
    return json.loads((d / MANIFEST).read_text())


def save_manifest(d: Path, m: dict, reseal: bool) -> None:
    """Write ``m`` as the bundle's manifest; ``reseal`` recomputes the integrity digest like an exporter would."""
    if reseal:
        m["integrity"] = {"manifest_sha256": manifest_digest(m)}
    (d / MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=True))


def test_exported_bundle_verifies(bundle_dir, bundle):
    manifest, files = read_bundle(bundle_dir)
    assert manifest["format"] == FORMAT_NAME and manifest["format_version"] == FORMAT_VERSION
    assert set(GRAPH_FILES.values()) <= set(files) == set(manifest["files"])
    for name, meta in manifest["files"].items():
        data = (bundle_dir / name).read_bytes()
        assert files[name] == data
        assert meta == {"sha256": sha256_bytes(data), "bytes": len(data)}
    assert manifest["integrity"]["manifest_sha256"] == manifest_digest(manifest)
    assert manifest["preprocess"] == {"channels": 1, "size": [28, 28], "resize": "nearest",
                                      "value_range": [0.0, 1.0], "ink": "high"}
    assert manifest["input"]["shape"] == [None, 1, 28, 28]
    assert manifest["method"] == "proto" and manifest["head"]["outputs"] == ["prototypes"]
    assert manifest["embedding"]["dim"] == bundle.embedding_dim == 64
    assert manifest["provenance"]["dataset"] == "omniglot" and manifest["provenance"]["split"] == "lake"
    assert manifest["parity"]["prediction_mismatches"] == 0
    assert {"5w1s", "5w5s", "20w1s"} <= set(manifest["validation"])
    assert bundle.identity == manifest["integrity"]["manifest_sha256"]
    # nothing in a bundle is a pickle: only JSON and ONNX, every file listed
    assert sorted(os.listdir(bundle_dir)) == sorted([MANIFEST, *manifest["files"]])
    assert all(name.endswith(".onnx") for name in manifest["files"])


def test_flipped_byte_in_backbone_is_refused(bundle_copy):
    p = bundle_copy / "backbone.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"sha256 of backbone.onnx does not match the manifest \(the file was altered\)"):
        Bundle.load(bundle_copy)


def test_truncated_adapt_graph_is_refused(bundle_copy):
    p = bundle_copy / "adapt.onnx"
    size = p.stat().st_size
    p.write_bytes(p.read_bytes()[: size - 10])
    with pytest.raises(BundleError, match=rf"adapt.onnx is {size - 10} bytes, the manifest says {size} \(truncated"):
        Bundle.load(bundle_copy)


def test_missing_classify_graph_is_refused(bundle_copy):
    (bundle_copy / "classify.onnx").unlink()
    with pytest.raises(BundleError, match=r"file 'classify.onnx' listed in the manifest is missing"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("edit", [
    lambda m: m["preprocess"].__setitem__("size", [32, 32]),
    lambda m: m["preprocess"].__setitem__("ink", "low"),
    lambda m: m["head"].__setitem__("scale", 2.0),
    lambda m: m["validation"]["5w1s"].__setitem__("accuracy", 99.9),
    lambda m: m["files"]["backbone.onnx"].__setitem__("sha256", "0" * 64),
], ids=["preprocess-size", "preprocess-ink", "head-scale", "validation", "file-sha256"])
def test_edited_manifest_is_refused(bundle_copy, edit):
    m = load_manifest(bundle_copy)
    edit(m)
    save_manifest(bundle_copy, m, reseal=False)
    with pytest.raises(BundleError, match=r"manifest.json was altered after export \(its integrity digest does not match\)"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("edit", [
    lambda m: m["preprocess"].__setitem__("size", [32, 32]),      # backbone.onnx takes 28x28
    lambda m: m["input"].__setitem__("shape", [None, 1, 32, 32]),
    lambda m: m["embedding"].__setitem__("dim", 128),             # backbone.onnx outputs 64
], ids=["preprocess-size", "input-shape", "embedding-dim"])
def test_input_spec_that_does_not_match_the_graphs_is_refused_at_load(bundle_copy, edit):
    """Design: a bundle whose input spec does not match is refused with a clear error, at load time,
    not later as an onnxruntime INVALID_ARGUMENT on the first fit()."""
    m = load_manifest(bundle_copy)
    edit(m)
    save_manifest(bundle_copy, m, reseal=True)
    with pytest.raises(BundleError):
        Bundle.load(bundle_copy)


def test_reformatted_but_unchanged_manifest_still_verifies(bundle_copy):
    """The digest covers the content, not the formatting: re-indenting the JSON is not tampering."""
    m = load_manifest(bundle_copy)
    (bundle_copy / MANIFEST).write_text(json.dumps(m))
    assert Bundle.load(bundle_copy).identity == m["integrity"]["manifest_sha256"]


@pytest.mark.parametrize("version", [4, 0, "1", "2", None, 2.0, True])
def test_other_format_version_is_refused(bundle_copy, version):
    m = load_manifest(bundle_copy)
    m["format_version"] = version
    save_manifest(bundle_copy, m, reseal=True)       # only the version check can catch this
    assert m["integrity"]["manifest_sha256"] == manifest_digest(load_manifest(bundle_copy))
    with pytest.raises(BundleError, match=rf"bundle format version {re.escape(repr(version))} is not supported by "
                                          rf"this edgemeta \(it reads versions 1, 2 and 3\); re-export"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("version", [1, 2])
def test_both_readable_format_versions_load_a_single_channel_bundle(bundle_copy, bundle, task, version):
    """Format 2 changed nothing for single-channel bundles: the same bundle labelled version 1 or 2
    loads and answers identically (the exporter writes version 2)."""
    assert FORMAT_VERSION == 2 and load_manifest(bundle_copy)["format_version"] == 2
    m = load_manifest(bundle_copy)
    m["format_version"] = version
    save_manifest(bundle_copy, m, reseal=True)
    sx, sy, qx, _ = task
    got = FewShotClassifier(Bundle.load(bundle_copy)).fit(sx, sy).decision_function(qx)
    np.testing.assert_array_equal(got, FewShotClassifier(bundle).fit(sx, sy).decision_function(qx))


def test_other_format_name_is_refused(bundle_copy):
    m = load_manifest(bundle_copy)
    m["format"] = "someone-elses-bundle"
    save_manifest(bundle_copy, m, reseal=True)
    with pytest.raises(BundleError, match=r"format is 'someone-elses-bundle', expected 'edgemeta-bundle'"):
        Bundle.load(bundle_copy)


def test_missing_required_field_is_refused(bundle_copy):
    m = load_manifest(bundle_copy)
    del m["preprocess"]
    save_manifest(bundle_copy, m, reseal=True)
    with pytest.raises(BundleError, match=r"manifest lacks required fields \['preprocess'\]"):
        Bundle.load(bundle_copy)


def test_wrong_graph_name_is_refused(bundle_copy):
    m = load_manifest(bundle_copy)
    m["graphs"]["adapt"] = "classify.onnx"
    save_manifest(bundle_copy, m, reseal=True)
    with pytest.raises(BundleError, match=r"manifest must list graph 'adapt' as 'adapt.onnx'"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b""])
def test_non_json_manifest_is_refused(bundle_copy, content):
    (bundle_copy / MANIFEST).write_bytes(content)
    with pytest.raises(BundleError, match=r"manifest.json is not valid JSON .*; the file is damaged"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("manifest", [[1, 2, 3], "edgemeta-bundle", 7])
def test_json_that_is_not_an_object_is_refused(bundle_copy, manifest):
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="expected 'edgemeta-bundle'"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("field,value", [
    ("integrity", "deadbeef"),                    # not an object
    ("graphs", ["backbone.onnx", "adapt.onnx", "classify.onnx"]),
    ("files", {"backbone.onnx": {"sha256": "0" * 64}, "adapt.onnx": {}, "classify.onnx": {}}),
    ("files", ["backbone.onnx", "adapt.onnx", "classify.onnx"]),
], ids=["integrity-string", "graphs-list", "files-without-bytes", "files-list"])
def test_malformed_manifest_structure_is_a_bundle_error(bundle_copy, field, value):
    """A manifest that parses but has the wrong structure must be refused with BundleError too
    (callers such as `edgemeta inspect` catch BundleError only), never AttributeError/KeyError."""
    m = load_manifest(bundle_copy)
    m[field] = value
    save_manifest(bundle_copy, m, reseal=field != "integrity")
    with pytest.raises(BundleError):
        Bundle.load(bundle_copy)


def test_directory_that_is_not_a_bundle(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(BundleError, match=r"no manifest.json; is this an edgemeta bundle\?"):
        Bundle.load(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.load(empty)


def test_missing_path_and_foreign_file(tmp_path):
    with pytest.raises(BundleError, match=r"bundle not found: .*nowhere \(expected a bundle directory or .zip\)"):
        Bundle.load(tmp_path / "nowhere")
    f = tmp_path / "model.bin"
    f.write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="neither a bundle directory nor a .zip bundle"):
        Bundle.load(f)


def test_zipped_bundle_loads_and_predicts_identically(bundle_dir, bundle, tmp_path, task):
    z = zip_bundle(bundle_dir, tmp_path / "tiny.zip")
    assert zipfile.is_zipfile(z)
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == sorted([MANIFEST, *bundle.manifest["files"]])
    zb = Bundle.load(z)
    assert zb.manifest == bundle.manifest and zb.identity == bundle.identity
    sx, sy, qx, _ = task
    a = FewShotClassifier(bundle).fit(sx, sy)
    b = FewShotClassifier(zb).fit(sx, sy)
    np.testing.assert_array_equal(a.decision_function(qx), b.decision_function(qx))
    np.testing.assert_array_equal(a.predict(qx), b.predict(qx))


def test_tampered_zip_is_refused(bundle_dir, tmp_path):
    z = zip_bundle(bundle_dir, tmp_path / "tiny.zip")
    with zipfile.ZipFile(z) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    entries["classify.onnx"] = entries["classify.onnx"][:-1] + bytes([entries["classify.onnx"][-1] ^ 0xFF])
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
    with pytest.raises(BundleError, match="sha256 of classify.onnx does not match"):
        Bundle.load(bad)
    # and zip_bundle refuses to pack a bundle that does not verify
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST).write_text("{}")
    with pytest.raises(BundleError):
        zip_bundle(broken, tmp_path / "never.zip")
    assert not (tmp_path / "never.zip").exists()


def test_write_bundle_roundtrip_and_replace(bundle_dir, tmp_path):
    manifest, files = read_bundle(bundle_dir)
    out = tmp_path / "rewritten"
    write_bundle(out, manifest, files)
    m2, f2 = read_bundle(out)
    assert f2 == files
    assert m2 == manifest                      # same content -> same files/integrity entries
    # rewriting with a changed field replaces the bundle in place, with a new valid digest
    changed = dict(manifest, validation={"note": "re-measured"})
    write_bundle(out, changed, files)
    m3, _ = read_bundle(out)
    assert m3["validation"] == {"note": "re-measured"}
    assert m3["integrity"]["manifest_sha256"] != manifest["integrity"]["manifest_sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rewritten"]      # no temp dirs left behind
    # verify() is the same check on in-memory bytes
    raw = {p.name: p.read_bytes() for p in out.iterdir()}
    assert verify(raw, "mem") == m3
    raw["adapt.onnx"] = b""
    with pytest.raises(BundleError, match=r"^mem: adapt.onnx is 0 bytes"):
        verify(raw, "mem")


def test_zip_of_a_bundle_folder_loads(bundle_dir, bundle, tmp_path):
    """`zip -r b.zip tiny.bundle/` stores entries under a folder; the reader takes them by file name."""
    z = tmp_path / "folder.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("tiny.bundle/", b"")
        for p in sorted(bundle_dir.iterdir()):
            zf.writestr(f"tiny.bundle/{p.name}", p.read_bytes())
    assert Bundle.load(z).identity == bundle.identity
