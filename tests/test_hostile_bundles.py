"""Hostile bundles: loading reads only what the manifest lists, bounded, and refuses with BundleError.

Every test works on a copy of the shipped ``models/omniglot-conv4-proto`` (no training needed).
Manifests are "resealed" (checksums and integrity digest recomputed) where the attack is someone
who can rewrite the whole bundle: only the schema and the load-time checks stand in the way then.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgemeta.contract.bundle import MANIFEST, read_bundle
from edgemeta.contract.manifest_schema import schema_paths
from edgemeta.errors import BundleError
from edgemeta.runtime import Bundle, FewShotClassifier

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "models" / "omniglot-conv4-proto", ROOT / "models" / "omniglot-conv4"]
_spec = importlib.util.spec_from_file_location("bundle_fuzz", ROOT / "tools" / "fuzz" / "bundle_fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.fixture
def copy_dir(tmp_path) -> Path:
    if not (fuzz.BASE / MANIFEST).is_file():  # pragma: no cover - shipped with the checkout
        pytest.skip("models/omniglot-conv4-proto is not in this checkout")
    dst = tmp_path / "b"
    shutil.copytree(fuzz.BASE, dst)
    return dst


def rewrite(d: Path, edit) -> None:
    """Edit the manifest in place and reseal it (checksums of the files on disk, integrity digest)."""
    m = json.loads((d / MANIFEST).read_text())
    edit(m)
    files = {n: (d / n).read_bytes() for n in m.get("files", {}) if isinstance(n, str) and (d / n).is_file()}
    (d / MANIFEST).write_text(json.dumps(fuzz.reseal(m, files), indent=2))


def entries(d: Path) -> list[tuple[str, bytes]]:
    m = json.loads((d / MANIFEST).read_text())
    return [(MANIFEST, (d / MANIFEST).read_bytes()), *((n, (d / n).read_bytes()) for n in m["files"])]


# ------------------------------------------------------------------------------------ folders

_PROBE = """
import json, resource, sys
opened = []
sys.addaudithook(lambda ev, args: opened.append(str(args[0])) if ev == "open" and isinstance(args[0], (str, bytes)) else None)
from edgemeta.contract.bundle import read_bundle
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
manifest, files = read_bundle(sys.argv[1])
print(json.dumps({"opened": sorted({p for p in opened if p.startswith(sys.argv[1])}), "files": sorted(files),
                  "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


def test_unlisted_files_are_never_opened(copy_dir, tmp_path):
    """An unlisted symlink to a secret, a symlink to a FIFO and a 1 GiB sparse file are not opened or read."""
    secret = tmp_path / "secret"
    secret.write_text("do not read")
    secret.chmod(0)
    os.symlink(secret, copy_dir / "notes.txt")
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", copy_dir / "pipe.txt")
    with open(copy_dir / "huge.bin", "wb") as fh:
        fh.truncate(1 << 30)
    p = subprocess.run([sys.executable, "-c", _PROBE, str(copy_dir)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    listed = json.loads((copy_dir / MANIFEST).read_text())["files"]
    assert rec["files"] == sorted(listed)
    assert rec["opened"] == sorted(str(copy_dir / n) for n in [MANIFEST, *listed])
    assert rec["rss_growth_mb"] < 300


@pytest.mark.parametrize("name", ["adapt.onnx", MANIFEST])
def test_listed_symlink_is_refused(copy_dir, tmp_path, name):
    real = tmp_path / f"real-{name}"
    (copy_dir / name).rename(real)
    os.symlink(real, copy_dir / name)
    with pytest.raises(BundleError, match=rf"{name} is a symbolic link"):
        read_bundle(copy_dir)


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_listed_special_file_is_refused_without_blocking(copy_dir, kind):
    (copy_dir / "classify.onnx").unlink()
    os.mkfifo(copy_dir / "classify.onnx") if kind == "fifo" else (copy_dir / "classify.onnx").mkdir()
    with pytest.raises(BundleError, match="classify.onnx is not a regular file"):
        read_bundle(copy_dir)


def test_a_listed_file_is_read_only_up_to_its_listed_size(copy_dir):
    size = (copy_dir / "backbone.onnx").stat().st_size
    with open(copy_dir / "backbone.onnx", "r+b") as fh:
        fh.truncate(1 << 30)                                       # grown to 1 GiB (sparse)
    with pytest.raises(BundleError, match=rf"backbone.onnx is more than {size} bytes, the manifest says {size}"):
        read_bundle(copy_dir)


def test_listed_files_are_bounded_in_total_and_checked_as_read(copy_dir):
    """Sixteen listed 1 GiB files would cost 16 GiB if all were read before any checksum; the declared
    total is refused from the manifest, and a file that fails its checksum stops the reading."""
    for i in range(2):                                           # 2 x 300 MiB, sparse: nothing on disk
        with open(copy_dir / f"big{i}.bin", "wb") as fh:
            fh.truncate(300 << 20)
    rewrite(copy_dir, lambda m: m["files"].update(
        {f"big{i}.bin": {"sha256": "0" * 64, "bytes": 300 << 20} for i in range(2)}))
    with pytest.raises(BundleError, match=r"lists \d+ bytes of files; a bundle holds at most"):
        read_bundle(copy_dir)
    m = json.loads((copy_dir / MANIFEST).read_text())           # 300 MiB: within bounds, wrong sha256
    m["files"].pop("big1.bin")
    m["files"]["big0.bin"]["sha256"] = "0" * 64
    (copy_dir / MANIFEST).write_text(json.dumps(fuzz.reseal(m), indent=2))   # digest only
    opened: list[str] = []
    real_open = os.open
    def spy(path, *a, **k):
        opened.append(Path(path).name)
        return real_open(path, *a, **k)
    os.open = spy
    try:
        with pytest.raises(BundleError, match="sha256 of big0.bin does not match"):
            read_bundle(copy_dir)
    finally:
        os.open = real_open
    assert opened[-1] == "big0.bin"                             # nothing listed after it was read


@pytest.mark.parametrize("name", ["../adapt.onnx", "sub/adapt.onnx", "/etc/passwd", ".hidden", "a\\b", "x\x00y"])
def test_listed_names_must_be_plain_file_names(copy_dir, name):
    rewrite(copy_dir, lambda m: m["files"].__setitem__(name, {"sha256": "0" * 64, "bytes": 1}))
    with pytest.raises(BundleError, match="plain file names"):
        read_bundle(copy_dir)


# ------------------------------------------------------------------------------------ zips

def test_zip_listed_entry_declaring_a_huge_size_is_refused_before_inflating(copy_dir, tmp_path):
    z = tmp_path / "b.zip"
    z.write_bytes(fuzz.declare_size(fuzz.zip_bytes(entries(copy_dir)), "backbone.onnx", (1 << 32) - 1))
    with pytest.raises(BundleError, match=r"backbone.onnx is 4294967295 bytes.*refused without inflating"):
        read_bundle(z)
    z.write_bytes(fuzz.declare_size(fuzz.zip_bytes(entries(copy_dir)), MANIFEST, 1 << 30))
    with pytest.raises(BundleError, match=r"'manifest.json' declares 1073741824 bytes.*refused without inflating"):
        read_bundle(z)


def test_zip_overlapping_entries_are_refused_quickly(copy_dir, tmp_path):
    """200 directory entries sharing one compressed stream (an overlapping-entry zip bomb)."""
    z = tmp_path / "bomb.zip"
    data = fuzz.zip_bytes([*entries(copy_dir), ("notes.bin", bytes(8 << 20))])
    z.write_bytes(fuzz.alias_entries(data, "notes.bin", [f"alias{i:03d}" for i in range(200)]))
    t = time.perf_counter()
    with pytest.raises(BundleError, match="overlap"):
        read_bundle(z)
    assert time.perf_counter() - t < 2.0


def test_zip_duplicate_names_are_refused(copy_dir, tmp_path):
    z = tmp_path / "dup.zip"
    evil = (copy_dir / MANIFEST).read_bytes().replace(b'"ink": "high"', b'"ink": "low"')
    z.write_bytes(fuzz.zip_bytes([*entries(copy_dir), (MANIFEST, evil)]))
    with pytest.raises(BundleError, match=r"entries named \['manifest.json'\] more than once"):
        read_bundle(z)


def test_zip_unlisted_entries_are_not_read(copy_dir, tmp_path):
    """A damaged unlisted entry (its bytes flipped) and a zip inside the zip do not matter."""
    z = tmp_path / "extra.zip"
    inner = fuzz.zip_bytes(entries(copy_dir))
    data = bytearray(fuzz.zip_bytes([*entries(copy_dir), ("inner.zip", inner), ("notes.txt", b"n" * 4096)]))
    start = data.index(b"notes.txt") + len("notes.txt")           # inside notes.txt's compressed data
    data[start + 2] ^= 0xFF
    z.write_bytes(bytes(data))
    manifest, files = read_bundle(z)
    assert sorted(files) == sorted(manifest["files"])


def test_zip_folders(copy_dir, tmp_path):
    one = tmp_path / "one.zip"
    one.write_bytes(fuzz.zip_bytes([("bundle/", b""), *((f"bundle/{n}", d) for n, d in entries(copy_dir))]))
    assert read_bundle(one)[0] == read_bundle(copy_dir)[0]
    nested = tmp_path / "nested.zip"
    nested.write_bytes(fuzz.zip_bytes([(f"a/b/{n}", d) for n, d in entries(copy_dir)]))
    with pytest.raises(BundleError, match="nested folders are not supported"):
        read_bundle(nested)
    zz = tmp_path / "zz.zip"
    zz.write_bytes(fuzz.zip_bytes([("bundle.zip", one.read_bytes())]))
    with pytest.raises(BundleError, match="no manifest.json"):
        read_bundle(zz)


def test_damaged_zip_is_a_bundle_error(copy_dir, tmp_path):
    data = fuzz.zip_bytes(entries(copy_dir))
    z = tmp_path / "cut.zip"
    _, cd_offset, _ = fuzz._central_directory(data)
    cut = bytearray(data)
    cut[cd_offset + 42:cd_offset + 46] = (len(data) * 2).to_bytes(4, "little")   # first entry's offset past the end
    z.write_bytes(bytes(cut))
    with pytest.raises(BundleError):
        read_bundle(z)


# ------------------------------------------------------------------------------------ manifest JSON

@pytest.mark.parametrize("attack,match", [
    (lambda t: t.replace('"method": "proto"', '"method": "proto", "method": "ridge"', 1), "duplicate key 'method'"),
    (lambda t: t[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "\n}", "nests deeper than"),
    (lambda t: t.replace('"dim": 64', '"dim": ' + "9" * 5000, 1), "an integer of 5000 digits"),
    (lambda t: t.replace('"scale": ', '"scale": NaN, "x": ', 1), "constant NaN"),
    (lambda t: t.replace('"min_shots": 1', '"min_shots": 1e999', 1), "overflows a float"),
    (lambda t: t + " " * (1 << 20), "larger than 1048576 bytes"),
], ids=["duplicate-keys", "deep-nesting", "huge-int", "nan", "infinity", "huge-file"])
def test_manifest_json_is_parsed_strictly(copy_dir, attack, match):
    text = (copy_dir / MANIFEST).read_text()
    (copy_dir / MANIFEST).write_text(attack(text))
    with pytest.raises(BundleError, match=match):
        read_bundle(copy_dir)


def _set(path: str, value):
    def edit(m):
        *parents, last = path.split(".")
        node = m
        for k in parents:
            node = node[k]
        node[last] = value
    return edit


SCHEMA_VIOLATIONS = {
    "limits-null": (_set("limits", None), r"limits must be an object"),
    "limits-min-ways-0": (_set("limits.min_ways", 0), r"limits.min_ways must be an integer in \[2,"),
    "limits-min-over-max": (_set("limits.min_ways", 5000), r"min_ways 5000 exceeds limits.max_ways"),
    "limits-max-ways-string": (_set("limits.max_ways", "1000"), r"limits.max_ways must be an integer"),
    "provenance-null": (_set("provenance", None), r"provenance must be an object"),
    "provenance-split-int": (_set("provenance.split", 3), r"provenance.split must be a string"),
    "head-outputs-null": (_set("head.outputs", None), r"head.outputs must be a list"),
    "head-outputs-other": (_set("head.outputs", ["weight", "bias"]), r"method 'proto' has the head parameters"),
    "head-method-other": (_set("head.method", "ridge"), r"head.method is 'ridge' but method is 'proto'"),
    "method-unknown": (_set("method", "maml"), r"method must be one of"),
    "ink-low": (_set("preprocess.ink", "low"), r"preprocess.ink must be 'high'"),
    "ink-null": (_set("preprocess.ink", None), r"preprocess.ink must be 'high'"),
    "channels-3": (_set("preprocess.channels", 3), r"preprocess.channels must be 1"),
    "resize-unknown": (_set("preprocess.resize", "magic"), r"preprocess.resize must be one of"),
    "size-huge": (_set("preprocess.size", [100000, 28]), r"preprocess.size\[0\] must be an integer in \[1, 1024\]"),
    "size-float": (_set("preprocess.size", [28.0, 28]), r"preprocess.size\[0\] must be an integer"),
    "value-range": (_set("preprocess.value_range", [0, 255]), r"preprocess.value_range must be the list \[0, 1\]"),
    "input-shape-short": (_set("input.shape", [None, 1, 28]), r"input.shape must be a list of 4..4"),
    "input-shape-batch": (_set("input.shape", [5, 1, 28, 28]), r"input.shape .* must be \[null, channels"),
    "input-dtype": (_set("input.dtype", "float16"), r"input.dtype must be 'float32'"),
    "dim-string": (_set("embedding.dim", "64"), r"embedding.dim must be an integer"),
    "dim-bool": (_set("embedding.dim", True), r"embedding.dim must be an integer"),
    "shift-views-far": (_set("embedding.shift_views", [[100, 0]]), r"shift_views\[0\]\[0\] must be an integer in \[-8, 8\]"),
    "validation-null": (_set("validation", None), r"validation must be an object"),
    "validation-accuracy-string": (_set("validation.5w1s.accuracy", "high"), r"validation.5w1s.accuracy must be a number"),
    "validation-item-number": (_set("validation.5w1s", 97.9), r"validation.5w1s must be"),
    "open-set-null": (_set("open_set", None), r"open_set must be an object"),
    "open-set-key": (_set("open_set.threshold_by_shots", {"one": -3.0}), r"threshold_by_shots has the key 'one'"),
    "open-set-threshold-null": (_set("open_set.threshold_by_shots", {"1": None}), r"threshold_by_shots.1 must be a number"),
    "open-set-score": (_set("open_set.score", "entropy"), r"open_set.score must be 'max_logit'"),
    "int8-graph-renamed": (_set("graphs.backbone_int8", "backbone.onnx"), r"graphs.backbone_int8 must be 'backbone.int8.onnx'"),
    "int8-graph-unlisted": (lambda m: m["files"].pop("backbone.int8.onnx"),
                            r"must list graph 'backbone_int8' \(backbone.int8.onnx\) under files"),
    "precision-default": (_set("precision.default", "int4"), r"precision.default must be one of"),
    "embedding-name": (_set("embedding.name", "features"), r"embedding.name must be 'embeddings'"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_VIOLATIONS))
def test_each_schema_violation_is_refused(copy_dir, case):
    edit, match = SCHEMA_VIOLATIONS[case]
    rewrite(copy_dir, edit)
    with pytest.raises(BundleError, match=match):
        Bundle.load(copy_dir)


COLOUR_VIOLATIONS = {
    "version-1": (_set("format_version", 1), r"preprocess.channels must be 1 in a format-version-1 bundle"),
    "channels-2": (_set("preprocess.channels", 2), r"preprocess.channels must be one of \[1, 3\]"),
    "channels-true": (_set("preprocess.channels", True), r"preprocess.channels must be one of \[1, 3\]"),
    "channel-order-bgr": (_set("preprocess.channel_order", "BGR"), r"preprocess.channel_order must be 'RGB'"),
    "channel-order-missing": (lambda m: m["preprocess"].pop("channel_order"), r"lacks required fields \['channel_order'\]"),
    "fit-stretch": (_set("preprocess.fit", "stretch"), r"preprocess.fit must be 'centre_crop'"),
    "resize-nearest": (_set("preprocess.resize", "nearest"), r"preprocess.resize must be 'box_int'"),
    "normalization-none": (_set("preprocess.normalization", "none"), r"preprocess.normalization must be 'in_graph'"),
    "ink-set": (_set("preprocess.ink", "high"), r"preprocess.ink is set in a colour bundle"),
    "input-one-channel": (_set("input.shape", [-1, 1, 84, 84]), r"input.shape .* must be \[null or -1, channels"),
    "input-batch-0": (_set("input.shape", [0, 3, 84, 84]), r"input.shape .* must be \[null or -1, channels"),
    "grey-with-box-int": (lambda m: m.__setitem__("preprocess", {"channels": 1, "size": [84, 84], "resize": "box_int"}),
                          r"preprocess.resize must be one of"),
    "size-other-than-graph": (lambda m: (_set("preprocess.size", [80, 80])(m), _set("input.shape", [-1, 3, 80, 80])(m)),
                              r"does not match backbone.onnx's input"),
}


@pytest.mark.parametrize("case", sorted(COLOUR_VIOLATIONS))
def test_each_colour_manifest_violation_is_refused(colour_bundle_dir, tmp_path, case):
    """Version-2 colour manifests, rewritten whole and resealed: the schema or the load-time graph
    checks refuse each; the untouched copy loads."""
    d = tmp_path / "c"
    shutil.copytree(colour_bundle_dir, d)
    assert Bundle.load(d).channels == 3
    edit, match = COLOUR_VIOLATIONS[case]
    rewrite(d, edit)
    with pytest.raises(BundleError, match=match):
        Bundle.load(d)


def test_a_version_2_grey_bundle_may_write_minus_one_for_the_batch(copy_dir):
    rewrite(copy_dir, lambda m: (_set("format_version", 2)(m), _set("input.shape", [-1, 1, 28, 28])(m)))
    assert Bundle.load(copy_dir).channels == 1
    rewrite(copy_dir, _set("format_version", 1))
    with pytest.raises(BundleError, match=r"input.shape .* must be \[null, channels"):
        Bundle.load(copy_dir)


def test_every_schema_field_is_documented():
    doc = (ROOT / "docs" / "bundle-format.md").read_text()
    missing = [p for p in schema_paths() if f"`{p}`" not in doc]
    assert not missing, f"docs/bundle-format.md does not name {missing}"


# ------------------------------------------------------------------------------------ graphs

def test_unloadable_graph_is_a_bundle_error_naming_it(copy_dir):
    (copy_dir / "classify.onnx").write_bytes(b"\x08\x07garbage" * 10)
    rewrite(copy_dir, lambda m: None)
    with pytest.raises(BundleError, match=r"onnxruntime cannot load classify.onnx"):
        Bundle.load(copy_dir)


def test_graph_in_the_wrong_role_is_refused(copy_dir):
    shutil.copy(copy_dir / "adapt.onnx", copy_dir / "classify.onnx")
    rewrite(copy_dir, lambda m: None)
    with pytest.raises(BundleError, match="do not follow the contract"):
        Bundle.load(copy_dir)


def test_inspect_never_prints_a_traceback_on_a_hostile_bundle(copy_dir):
    from typer.testing import CliRunner

    from edgemeta.cli import app

    rewrite(copy_dir, _set("provenance", None))
    res = CliRunner().invoke(app, ["inspect", str(copy_dir)])
    assert res.exit_code != 0 and isinstance(res.exception, SystemExit)
    assert "provenance must be an object" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------------------------ shipped bundles

@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_bundles_load_and_answer_as_their_graphs_do(path):
    """The strict reader accepts the shipped bundles, and the runtime answers exactly as the raw graphs."""
    if not (path / MANIFEST).is_file():  # pragma: no cover - shipped with the checkout
        pytest.skip(f"{path} is not in this checkout")
    rng = np.random.default_rng(0)
    sx, qx = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    sy = np.array([0, 0, 1, 1, 2, 2])
    for precision, backbone in (("fp32", "backbone.onnx"), ("int8", "backbone.int8.onnx")):
        b = Bundle.load(path, precision=precision)
        got = FewShotClassifier(b, ink="high").fit(sx, sy).decision_function(qx)
        s = {n: ort.InferenceSession(str(path / n), providers=["CPUExecutionProvider"])
             for n in (backbone, "adapt.onnx", "classify.onnx")}
        emb = lambda x: s[backbone].run(None, {"images": (x[:, None] / 255.0).astype(np.float32)})[0]  # noqa: E731
        (protos,) = s["adapt.onnx"].run(None, {"support_embeddings": emb(sx),
                                              "support_labels_onehot": np.eye(3, dtype=np.float32)[sy]})
        want = s["classify.onnx"].run(None, {"embeddings": emb(qx), "prototypes": protos})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("base", ["grey", "colour"])
@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_fuzzer_finds_no_escape(kind, base):
    """500 hostile mutants per kind, of the shipped version-1 grey bundle and of the version-2 colour
    bundle (fed colour images): each is refused with BundleError or loads and works."""
    path = fuzz.BASE if base == "grey" else fuzz.COLOUR_BASE
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz" / "bundle_fuzz.py"), "--kind", kind,
                        "--mutants", "500", "--seed", "0", "--base", str(path), "--json"], capture_output=True,
                       text=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": "1"})
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["refused"] + res["usable"] == 500 and res["usable"] > 0 and res["refused"] > 0
    assert res["escaped"] == 0, res["escaped_examples"]
