"""Fuzz the bundle loader with hostile mutants of a bundle (default models/omniglot-conv4-proto).

    python tools/fuzz/bundle_fuzz.py --kind folder|zip --mutants 500 --seed 0 [--base BUNDLE] [--json]

``--base`` picks the bundle folder to mutate, e.g. the version-2 colour bundle
js/test/colour-bundle. Each mutant is loaded with ``Bundle.load``; an accepted one must
then fit and predict (``FewShotClassifier`` on random uint8 images of the base's own input: grey
``[n, H, W]`` or colour ``[n, H, W, 3]``) and pass ``edgemeta inspect``. Outcomes:
``refused`` (BundleError), ``usable`` (accepted, fit/predict/inspect worked) and ``escaped`` (any
other exception, or accepted but fit/predict/inspect failed). The goal is 0 escaped.

Mutations: byte flips / truncation / extension of each listed file (checksums kept, or recomputed
as anyone who can rewrite a bundle can), JSON field mutations of the manifest with checksums and
integrity digest recomputed (types swapped, null, huge, negative, wrong strings, removed keys,
nested bombs, duplicate keys, NaN), symlinks (listed and unlisted, to a FIFO and to unreadable
files), unlisted huge sparse files; zips: all of that packed flat, huge declared entry sizes,
entries sharing one compressed stream (overlapping-entry zip bomb), duplicate names, flipped and
truncated zip bytes, nested folders, a zip inside a zip.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import random
import re
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgemeta.contract.bundle import MANIFEST, manifest_digest, sha256_bytes  # noqa: E402
from edgemeta.errors import BundleError  # noqa: E402
from edgemeta.runtime import Bundle, FewShotClassifier  # noqa: E402

BASE = ROOT / "models" / "omniglot-conv4-proto"
COLOUR_BASE = ROOT / "js" / "test" / "colour-bundle"
Files = dict[str, bytes]


def load_base(base: Path = BASE) -> tuple[dict[str, Any], Files]:
    """The manifest and the listed files' bytes of the bundle folder ``base``."""
    manifest = json.loads((base / MANIFEST).read_text())
    return manifest, {name: (base / name).read_bytes() for name in manifest["files"]}


def input_images(manifest: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    """Random uint8 images of the bundle's own input: grey ``[n, H, W]`` or colour ``[n, H, W, 3]``."""
    pre = manifest["preprocess"]
    h, w = pre["size"]
    shape = (n, h, w, 3) if pre.get("channels", 1) == 3 else (n, h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def reseal(manifest: dict[str, Any], files: Files | None = None) -> dict[str, Any]:
    """Recompute the listed files' checksums (when ``files`` is given) and the integrity digest."""
    m = copy.deepcopy(manifest)
    if files is not None and isinstance(m.get("files"), dict):
        for name in list(m["files"]):
            if name in files:
                m["files"][name] = {"sha256": sha256_bytes(files[name]), "bytes": len(files[name])}
    if isinstance(m.get("integrity"), dict):
        m["integrity"]["manifest_sha256"] = manifest_digest(m)
    return m


# ----------------------------------------------------------------------------- JSON mutations

def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _nodes(v, path + (i,))
    return out


def _bomb(depth: int) -> Any:
    v: Any = 0
    for _ in range(depth):
        v = [v]
    return v


REPLACEMENTS: list[Any] = [None, "x", "", "low", "../../etc/passwd", "bicubic", "int8", "weight", "x" * 5000,
                           7, 0, -1, 10**30, -(10**30), 1e308, -1e308, 7.5, 0.5, True, False, [], {}, [1, 2],
                           [None, 1, 28, 28], {"a": 1}, [[0, 0]] * 100, _bomb(20)]


def mutate_json(rng: random.Random, manifest: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """One field mutation of a copy of ``manifest``; returns it and a description."""
    m = copy.deepcopy(manifest)
    path = rng.choice([p for p in _nodes(m) if p and p[0] != "integrity"])
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    op = rng.choice(["replace", "replace", "replace", "remove", "add", "negate", "scale"])
    old = parent[key]
    if op == "remove":
        del parent[key]
    elif op == "add" and isinstance(old, dict):
        old[rng.choice(["extra", "outputs", "dim", "min_ways"])] = rng.choice(REPLACEMENTS)
    elif op == "negate" and type(old) in (int, float):
        parent[key] = -old if old else -1
    elif op == "scale" and type(old) in (int, float):
        parent[key] = old * rng.choice([2, 10, 1000, 10**9]) + rng.choice([0, 1])
    else:
        op = "replace"
        parent[key] = copy.deepcopy(rng.choice(REPLACEMENTS))
    return m, f"json {op} {'.'.join(map(str, path))}"


def raw_manifest_attack(rng: random.Random, manifest: dict[str, Any]) -> tuple[bytes, str]:
    """Manifest text the JSON library would misread or choke on (digest kept valid where it can be)."""
    text = json.dumps(manifest, indent=2, sort_keys=True)
    kind = rng.choice(["duplicate", "deep", "huge-int", "nan", "infinity", "flip", "bom", "truncate"])
    if kind == "duplicate":   # a second "preprocess" that only the last-wins reader would see
        evil = json.dumps(dict(manifest["preprocess"], ink="low"))
        text = text.replace('{\n  "embedding"', '{\n  "preprocess": ' + evil + ',\n  "embedding"', 1)
    elif kind == "deep":
        text = text[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "\n}"
    elif kind == "huge-int":
        text = re.sub(r'"dim": \d+', '"dim": ' + "9" * 5000, text, count=1)
    elif kind == "nan":
        text = text.replace('"scale": ', '"scale": NaN, "x": ', 1)
    elif kind == "infinity":
        text = text.replace('"min_shots": 1', '"min_shots": 1e999', 1)
    elif kind == "bom":
        return b"\xef\xbb\xbf" + text.encode(), "raw bom"
    elif kind == "truncate":
        return text.encode()[: rng.randrange(len(text))], "raw truncate"
    else:
        data = bytearray(text.encode())
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data), "raw flip"
    return text.encode(), f"raw {kind}"


def mutate_file(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    op = rng.choice(["flip", "flip", "truncate", "extend", "empty"])
    if op == "flip":
        b = bytearray(data)
        for _ in range(rng.choice([1, 1, 4, 32])):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b), op
    if op == "truncate":
        return data[: rng.randrange(len(data))], op
    if op == "extend":
        return data + bytes(rng.randrange(256) for _ in range(rng.choice([1, 100, 4096]))), op
    return b"", op


# ----------------------------------------------------------------------------- folder mutants

def folder_mutant(rng: random.Random, base: tuple[dict[str, Any], Files], out: Path) -> str:
    """Write one hostile bundle folder at ``out``; returns what was done."""
    manifest, files = copy.deepcopy(base[0]), dict(base[1])
    family = rng.choices(["file", "json", "raw", "symlink", "unlisted", "special"], [25, 40, 10, 10, 10, 5])[0]
    mtext: bytes | None = None
    extra: Callable[[Path], None] | None = None
    if family == "file":
        name = rng.choice(sorted(files))
        files[name], op = mutate_file(rng, files[name])
        keep = rng.random() < 0.3
        manifest = manifest if keep else reseal(manifest, files)
        what = f"file {op} {name}" + (" (checksums kept)" if keep else " (resealed)")
    elif family == "json":
        manifest, what = mutate_json(rng, manifest)
        if rng.random() < 0.9:
            manifest = reseal(manifest)
        else:
            what += " (digest kept)"
    elif family == "raw":
        mtext, what = raw_manifest_attack(rng, manifest)
    elif family == "symlink":
        target = rng.choice(["listed-to-copy", "unlisted-to-secret", "unlisted-to-fifo", "manifest", "listed-to-fifo"])
        what = f"symlink {target}"

        def extra(d: Path, target: str = target) -> None:
            if target == "listed-to-copy":
                real = d.parent / f"{d.name}.real.onnx"
                (d / "adapt.onnx").rename(real)
                os.symlink(real, d / "adapt.onnx")
            elif target == "manifest":
                real = d.parent / f"{d.name}.manifest.json"
                (d / MANIFEST).rename(real)
                os.symlink(real, d / MANIFEST)
            elif target == "listed-to-fifo":
                (d / "classify.onnx").unlink()
                fifo = d.parent / f"{d.name}.fifo"
                os.mkfifo(fifo)
                os.symlink(fifo, d / "classify.onnx")
            elif target == "unlisted-to-fifo":
                fifo = d.parent / f"{d.name}.fifo"
                os.mkfifo(fifo)
                os.symlink(fifo, d / "notes.txt")
            else:
                secret = d.parent / f"{d.name}.secret"
                secret.write_text("secret")
                secret.chmod(0)
                os.symlink(secret, d / "notes.txt")
    elif family == "unlisted":
        what = "unlisted huge sparse file"

        def extra(d: Path) -> None:
            with open(d / "huge.bin", "wb") as fh:
                fh.truncate(1 << 30)
    else:
        target = rng.choice(["dir", "fifo"])
        name = rng.choice(sorted(files))
        what = f"listed {name} is a {target}"

        def extra(d: Path, target: str = target, name: str = name) -> None:
            (d / name).unlink()
            if target == "dir":
                (d / name).mkdir()
            else:
                os.mkfifo(d / name)
    out.mkdir(parents=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / MANIFEST).write_bytes(mtext if mtext is not None else json.dumps(manifest, indent=2).encode())
    if extra is not None:
        extra(out)
    return what


# ----------------------------------------------------------------------------- zip mutants

def zip_bytes(entries: list[tuple[str, bytes]], level: int = 6) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # duplicate names are the point of some mutants
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buf.getvalue()


def _central_directory(data: bytes) -> tuple[int, int, int]:
    """(offset of the end record, offset of the central directory, its size)."""
    eocd = data.rfind(b"PK\x05\x06")
    size, offset = struct.unpack("<II", data[eocd + 12:eocd + 20])
    return eocd, offset, size


def _cd_records(data: bytes) -> list[tuple[int, int, str]]:
    """(start, length, name) of each central-directory record."""
    _, pos, size = _central_directory(data)
    out, end = [], pos + size
    while pos < end:
        n, m, k = struct.unpack("<HHH", data[pos + 28:pos + 34])
        out.append((pos, 46 + n + m + k, data[pos + 46:pos + 46 + n].decode()))
        pos += 46 + n + m + k
    return out


def alias_entries(data: bytes, target: str, names: list[str]) -> bytes:
    """Add central-directory records named ``names`` that all point at ``target``'s one stream
    (Fifield's overlapping-entry construction, without the quoted headers)."""
    eocd, cd_off, cd_size = _central_directory(data)
    rec = next((s, ln) for s, ln, n in _cd_records(data) if n == target)
    original = data[rec[0]:rec[0] + rec[1]]
    n = struct.unpack("<H", original[28:30])[0]
    extra = b"".join(original[:28] + struct.pack("<H", len(x.encode())) + original[30:46] + x.encode()
                     + original[46 + n:] for x in names)
    cd = data[cd_off:cd_off + cd_size] + extra
    count = struct.unpack("<H", data[eocd + 10:eocd + 12])[0] + len(names)
    end = bytearray(data[eocd:])
    end[8:16] = struct.pack("<HHI", count, count, len(cd))
    return data[:cd_off] + cd + bytes(end)


def declare_size(data: bytes, name: str, size: int) -> bytes:
    """Patch ``name``'s declared uncompressed size in the central directory."""
    b = bytearray(data)
    for start, _, n in _cd_records(data):
        if n == name:
            b[start + 24:start + 28] = struct.pack("<I", size)
    return bytes(b)


def zip_mutant(rng: random.Random, base: tuple[dict[str, Any], Files], out: Path) -> str:
    manifest, files = base
    mtext = json.dumps(manifest, indent=2).encode()
    entries = [(MANIFEST, mtext), *files.items()]
    family = rng.choices(["content", "huge-declared", "huge-unlisted", "overlap", "duplicate", "flip",
                          "truncate", "folder", "nested", "zip-in-zip", "stored"],
                         [30, 8, 5, 8, 8, 15, 6, 5, 5, 5, 5])[0]
    if family == "content":     # a folder-level mutation, packed as a zip
        tmp = out.parent / f"{out.name}.d"
        what = folder_mutant(rng, base, tmp)
        ents = [(p.name, p.read_bytes()) for p in sorted(tmp.iterdir())
                if p.is_file() and not p.is_symlink() and p.stat().st_size < (1 << 24)]
        out.write_bytes(zip_bytes(ents))
        return f"zip of [{what}]"
    if family == "huge-declared":
        name = rng.choice([MANIFEST, *files])
        out.write_bytes(declare_size(zip_bytes(entries), name, rng.choice([1 << 30, (1 << 32) - 1, len(files.get(name, b"")) + 1])))
        return f"zip {name} declares a huge size"
    if family == "huge-unlisted":
        out.write_bytes(zip_bytes([*entries, ("notes.bin", bytes(64 << 20))], level=1))
        return "zip with an unlisted 64 MiB entry"
    if family == "overlap":
        target = rng.choice(["notes.bin", "backbone.onnx"])
        data = zip_bytes([*entries, ("notes.bin", bytes(1 << 20))])
        out.write_bytes(alias_entries(data, target, [f"alias{i:03d}" for i in range(200)]))
        return f"zip with 200 entries sharing the stream of {target}"
    if family == "duplicate":
        name = rng.choice([MANIFEST, *files])
        dup = re.sub(rb'"dim": \d+', b'"dim": 128', mtext) if name == MANIFEST else b"\x00" * 16
        out.write_bytes(zip_bytes([*entries, (name, dup)]))
        return f"zip with {name} twice"
    if family in ("flip", "truncate"):
        data = bytearray(zip_bytes(entries))
        if family == "flip":
            for _ in range(rng.choice([1, 1, 3])):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            data = data[: rng.randrange(len(data))]
        out.write_bytes(bytes(data))
        return f"zip bytes {family}"
    if family == "folder":
        out.write_bytes(zip_bytes([("bundle/", b""), *((f"bundle/{n}", d) for n, d in entries)]))
        return "zip of one folder"
    if family == "nested":
        out.write_bytes(zip_bytes([(f"a/b/{n}", d) for n, d in entries]))
        return "zip nested two folders deep"
    if family == "zip-in-zip":
        inner = zip_bytes(entries)
        if rng.random() < 0.5:
            out.write_bytes(zip_bytes([("bundle.zip", inner)]))
            return "zip holding only a zipped bundle"
        out.write_bytes(zip_bytes([*entries, ("inner.zip", inner)]))
        return "zip with an unlisted zip inside"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    out.write_bytes(buf.getvalue())
    return "stored (uncompressed) zip"


# ----------------------------------------------------------------------------- running

SMOKE_IMAGES = 2000   # the most support images the usability smoke feeds to meet a bundle's declared limits


def support_for(limits: dict[str, Any], base: dict[str, Any], images: np.ndarray, labels: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """2-shot support images and labels within the bundle's declared ``limits.min_ways`` /
    ``max_ways``: the given 3-way set when it fits them, else a random set of the needed ways, or None
    when that would exceed SMOKE_IMAGES."""
    ways = min(max(3, int(limits.get("min_ways", 2))), int(limits.get("max_ways", 3)))
    if ways == 3:
        return images, labels
    if ways * 2 > SMOKE_IMAGES:
        return None
    return input_images(base, ways * 2, np.random.default_rng(1)), np.repeat(np.arange(ways), 2)


def use(path: Path, images: np.ndarray, labels: np.ndarray, queries: np.ndarray, base: dict[str, Any]) -> None:
    """Load, fit, predict (with open-set rejection when calibrated) and inspect: raise on any failure.
    The support set meets the bundle's declared limits; a bundle declaring more than SMOKE_IMAGES
    support images must refuse the small set with an InputError naming what it expects."""
    from edgemeta.errors import InputError

    bundle = Bundle.load(path)
    support = support_for(bundle.manifest.get("limits", {}), base, images, labels)
    if support is None:
        try:
            FewShotClassifier(bundle).fit(images, labels)
        except InputError as exc:
            if "expected" not in str(exc):
                raise AssertionError(f"the refusal names nothing expected: {exc}") from None
            return
        raise AssertionError("a bundle declaring more ways than the smoke feeds accepted 3 classes")
    clf = FewShotClassifier(bundle).fit(*support)
    pred = clf.predict(queries)
    assert pred.shape == (len(queries),), pred.shape
    if bundle.manifest.get("open_set", {}).get("threshold_by_shots"):
        clf.predict(queries, reject_unknown=True)
    clf.predict_proba(queries)
    from typer.testing import CliRunner

    from edgemeta.cli import app

    res = CliRunner().invoke(app, ["inspect", str(path)])
    if res.exit_code != 0 or res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"edgemeta inspect failed on an accepted bundle: {res.exception!r} {res.output[-300:]}")


def run(kind: str, mutants: int, seed: int, base_dir: Path = BASE) -> dict[str, Any]:
    rng = random.Random(seed)
    data_rng = np.random.default_rng(seed)
    base = load_base(base_dir)
    images = input_images(base[0], 6, data_rng)
    labels = np.array([0, 0, 1, 1, 2, 2])
    queries = input_images(base[0], 4, data_rng)
    make = folder_mutant if kind == "folder" else zip_mutant
    counts: Counter = Counter()
    escaped: list[dict[str, str]] = []
    slowest = (0.0, "")
    with tempfile.TemporaryDirectory(prefix="bundle-fuzz-") as tmp:
        for i in range(mutants):
            out = Path(tmp) / f"m{i:05d}" / ("bundle" if kind == "folder" else "bundle.zip")
            out.parent.mkdir()
            what = make(rng, base, out)
            t = time.perf_counter()
            try:
                Bundle.load(out)
            except BundleError:
                counts["refused"] += 1
            except Exception as exc:  # noqa: BLE001 - counting what escapes is the point
                counts["escaped"] += 1
                escaped.append({"mutant": what, "stage": "load", "error": f"{type(exc).__name__}: {exc}"[:400],
                                "where": traceback.format_exc(limit=-2)[-600:]})
            else:
                try:
                    use(out, images, labels, queries, base[0])
                    counts["usable"] += 1
                except Exception as exc:  # noqa: BLE001
                    counts["escaped"] += 1
                    escaped.append({"mutant": what, "stage": "fit/predict/inspect",
                                    "error": f"{type(exc).__name__}: {exc}"[:400]})
            took = time.perf_counter() - t
            slowest = max(slowest, (took, what))
            _clean(out.parent)
    return {"kind": kind, "base": str(base_dir), "mutants": mutants, "seed": seed, "refused": counts["refused"],
            "usable": counts["usable"], "escaped": counts["escaped"], "escaped_examples": escaped[:20],
            "slowest_seconds": round(slowest[0], 3), "slowest_mutant": slowest[1]}


def _clean(d: Path) -> None:
    """Remove a mutant's folder (it may hold FIFOs, symlinks and unreadable files)."""
    for p in sorted(d.parent.glob(f"{d.name}*"), reverse=True):
        for root, dirs, names in os.walk(p, topdown=False):
            for n in names:
                os.unlink(os.path.join(root, n))
            for n in dirs:
                q = os.path.join(root, n)
                os.unlink(q) if os.path.islink(q) else os.rmdir(q)
        os.rmdir(p) if p.is_dir() and not p.is_symlink() else os.unlink(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=["folder", "zip"], required=True)
    ap.add_argument("--mutants", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", type=Path, default=BASE, help="bundle folder to mutate (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if not (args.base / MANIFEST).is_file():
        ap.error(f"--base {args.base} is not a bundle folder (expected {MANIFEST} in it)")
    res = run(args.kind, args.mutants, args.seed, args.base.resolve())
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['kind']}: {res['mutants']} mutants of {res['base']} (seed {res['seed']})")
        print(f"  refused  {res['refused']:5d}   (BundleError)")
        print(f"  usable   {res['usable']:5d}   (accepted; fit, predict and inspect worked)")
        print(f"  escaped  {res['escaped']:5d}   (other exception, or accepted but unusable)")
        print(f"  slowest  {res['slowest_seconds']:.3f} s  ({res['slowest_mutant']})")
        for e in res["escaped_examples"]:
            print(f"  ESCAPED [{e['stage']}] {e['mutant']}: {e['error']}")
    return 1 if res["escaped"] else 0


if __name__ == "__main__":
    sys.exit(main())
