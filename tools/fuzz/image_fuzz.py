"""Fuzz the image-file decoder and the classifier's file path with hostile mutants of real photos.

    python tools/fuzz/image_fuzz.py --mutants 600 --seed 0 [--json]

Seeds: sample photos (../shared/data/mini-imagenet/sample; generated images when it is absent) saved
as JPEG (baseline, progressive, EXIF-rotated, a 640x480 one for draft decoding), PNG (8-bit RGB,
16-bit, palette, RGBA, LA, 1-bit), animated GIF, TIFF (CMYK, 32-bit float), BMP and WEBP.

Mutations: truncation, byte flips, header edits declaring huge (or zero) sizes, extension with
random bytes, chunk duplication (PNG chunks, or any byte range), other formats renamed ``.jpg``
(zip, a zip holding a JPEG, PDF, EPS, SVG, text), a valid file under the wrong suffix, 0 bytes, a
symbolic link to /dev/zero, to a FIFO, to itself, to nothing, and a folder named ``x.jpg``.

Each mutant goes through ``decode_image`` for a grey (1-channel) and a colour (3-channel) 84x84
target, and ``FewShotClassifier(colour bundle).predict([path])`` after fitting on two classes of
sample photos, in this process, each step under a 10 s ``signal.alarm``. Outcomes: ``decoded``
(every step gave a well-formed answer), ``refused`` (an InputError) and ``escaped`` (any other
exception, a wrong-shaped answer, a hang over 10 s). The peak RSS of the whole run (``resource``)
must stay under 500 MB above the start; the mutant that raised it most is decoded again in a fresh
subprocess, whose own peak growth is reported and held to the same bound. The goal is 0 escaped.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgemeta.contract.image_files import decode_image  # noqa: E402
from edgemeta.errors import InputError  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "mini-imagenet" / "sample"
COLOUR_BUNDLE = ROOT / "js" / "test" / "colour-bundle"
TARGET = (84, 84)
HANG_SECONDS = 10
RSS_BOUND_MB = 500
HUGE = [0, 1, 0xFFFF, 0x7FFF, 7000, 9000, 0x7FFFFFFF, 0xFFFFFFFF]


class Hang(BaseException):
    """Raised by the alarm: a step ran longer than HANG_SECONDS (a BaseException, so no handler eats it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang(f"no answer within {HANG_SECONDS} s")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- seeds

def seed_photos(n: int = 6) -> tuple[list[np.ndarray], str]:
    """``n`` uint8 RGB photos ``[h, w, 3]``: sample photos, or generated gradients with noise."""
    files = sorted(SAMPLE.glob("train/*/*.jpg"))[:: 37][:n] if SAMPLE.is_dir() else []
    if len(files) >= n:
        from PIL import Image

        return [np.asarray(Image.open(f).convert("RGB")) for f in files], "sample photos"
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:84, 0:84]
    out = []
    for k in range(n):
        base = np.stack([(x * 3 + k * 40) % 256, (y * 3) % 256, ((x + y) * 2) % 256], -1)
        out.append(np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8))
    return out, "generated images (sample photos absent)"


def encode_seeds(photos: list[np.ndarray]) -> dict[str, tuple[str, bytes]]:
    """Seed files: name -> (suffix, bytes), covering the formats and modes in the module docstring."""
    from PIL import Image

    def save(im: Image.Image, fmt: str, **kw: Any) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()

    rgb = Image.fromarray(photos[0])
    big = Image.fromarray(np.concatenate([np.concatenate(photos[:2], 1)] * 2, 0)).resize((640, 480))
    exif = Image.Exif()
    exif[0x0112] = 6
    grey = rgb.convert("L")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(84, dtype=np.uint8) * 3, (84, 1))))
    frames = [Image.fromarray(p).convert("P", palette=Image.Palette.ADAPTIVE) for p in photos[:3]]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "jpeg": (".jpg", save(rgb, "JPEG", quality=90)),
        "jpeg-progressive": (".jpg", save(rgb, "JPEG", quality=85, progressive=True)),
        "jpeg-exif-rotated": (".jpeg", save(Image.fromarray(photos[1]), "JPEG", exif=exif)),
        "jpeg-640x480": (".jpg", save(big, "JPEG", quality=80, progressive=True)),
        "png-rgb": (".png", save(rgb, "PNG")),
        "png-16bit": (".png", save(Image.fromarray(np.asarray(grey).astype(np.uint16) * 257), "PNG")),
        "png-palette": (".png", save(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG")),
        "png-rgba": (".png", save(rgba, "PNG")),
        "png-la": (".png", save(rgba.convert("LA"), "PNG")),
        "png-1bit": (".png", save(grey.convert("1"), "PNG")),
        "gif-animated": (".gif", gif.getvalue()),
        "tiff-cmyk": (".tif", save(rgb.convert("CMYK"), "TIFF")),
        "tiff-float": (".tiff", save(Image.fromarray(np.asarray(grey, np.float32) / 255), "TIFF")),
        "bmp": (".bmp", save(rgb, "BMP")),
        "webp": (".webp", save(Image.fromarray(photos[2]), "WEBP", quality=80)),
    }


# ----------------------------------------------------------------------------- mutations

def png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each PNG chunk (length, type, data, CRC) after the 8-byte signature."""
    out, pos = [], 8
    while pos + 12 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((pos, pos + 12 + n))
        pos += 12 + n
    return out


def declare_huge(rng: random.Random, data: bytes, size: tuple[int, int]) -> tuple[bytes, str]:
    """Overwrite the width/height the header declares: PNG IHDR (CRC recomputed or not), JPEG SOF,
    else every 16/32-bit field in the first 64 bytes that equals the width or height."""
    b = bytearray(data)
    w, h = rng.choice(HUGE), rng.choice(HUGE)
    if data.startswith(b"\x89PNG"):
        b[16:24] = struct.pack(">II", w, h)
        if rng.random() < 0.8:
            b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
        return bytes(b), f"PNG IHDR declares {w}x{h}"
    sof = next((i for i in range(len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2)), None)
    if data.startswith(b"\xff\xd8") and sof is not None:
        b[sof + 5:sof + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
        return bytes(b), f"JPEG SOF declares {w & 0xFFFF}x{h & 0xFFFF}"
    hits = 0
    for fmt in ("<H", ">H", "<I", ">I"):
        k = struct.calcsize(fmt)
        for i in range(0, min(64, len(b) - k)):
            v = struct.unpack(fmt, b[i:i + k])[0]
            if v in size and v > 4:
                b[i:i + k] = struct.pack(fmt, (w if v == size[0] else h) & (0xFFFF if k == 2 else 0xFFFFFFFF))
                hits += 1
    return bytes(b), f"header fields ({hits}) declare {w}x{h}"


def duplicate_chunk(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """A PNG chunk repeated in place (IHDR, PLTE, IDAT, IEND...), else a random byte range repeated."""
    chunks = png_chunks(data) if data.startswith(b"\x89PNG") else []
    if chunks:
        s, e = rng.choice(chunks)
        return data[:e] + data[s:e] * rng.choice([1, 2, 50]) + data[e:], f"PNG chunk {data[s + 4:s + 8]!r} repeated"
    s = rng.randrange(len(data))
    e = min(len(data), s + rng.choice([2, 16, 512, 4096]))
    return data[:e] + data[s:e] * rng.choice([1, 3]) + data[e:], "byte range repeated"


def other_format(rng: random.Random, seeds: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """Bytes of something that is not an image (or not this format) that gets a ``.jpg`` name."""
    kind = rng.choice(["zip", "zip-of-jpeg", "pdf", "eps", "svg", "text", "png-as-jpg", "gzip"])
    if kind in ("zip", "zip-of-jpeg"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("x.jpg" if kind == "zip-of-jpeg" else "notes.txt",
                        seeds["jpeg"][1] if kind == "zip-of-jpeg" else b"hello" * 100)
        return buf.getvalue(), kind
    if kind == "pdf":
        return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n", kind
    if kind == "eps":
        return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 84 84\n0 0 moveto 84 84 lineto stroke\n", kind
    if kind == "svg":
        return b'<svg xmlns="http://www.w3.org/2000/svg" width="84" height="84"><rect width="84"/></svg>', kind
    if kind == "gzip":
        return zlib.compress(seeds["bmp"][1]), "zlib-compressed BMP"
    if kind == "png-as-jpg":
        return seeds[rng.choice(["png-rgba", "png-16bit", "webp", "gif-animated"])][1], "another format named .jpg"
    return "name,label\nx.jpg,1\n".encode(), kind


def mutant_bytes(rng: random.Random, seeds: dict[str, tuple[str, bytes]], size_of: dict[str, tuple[int, int]]
                 ) -> tuple[bytes, str, str]:
    """(bytes, suffix, description) of one mutated file."""
    name = rng.choice(sorted(seeds))
    suffix, data = seeds[name]
    op = rng.choices(["truncate", "flip", "huge", "extend", "duplicate", "other", "empty", "as-is"],
                     [20, 25, 20, 8, 12, 8, 2, 5])[0]
    if op == "truncate":
        cut = rng.choice([rng.randrange(len(data)), rng.randrange(min(len(data), 64)), len(data) - 1])
        return data[:cut], suffix, f"{name} truncated to {cut} bytes"
    if op == "flip":
        b = bytearray(data)
        n = rng.choice([1, 1, 2, 8, 64])
        lo = 0 if rng.random() < 0.5 else min(len(b) - 1, 200)
        for _ in range(n):
            i = rng.randrange(lo, len(b)) if rng.random() < 0.5 else rng.randrange(min(len(b), 256))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), suffix, f"{name} with {n} bits flipped"
    if op == "huge":
        out, what = declare_huge(rng, data, size_of[name])
        return out, suffix, f"{name}: {what}"
    if op == "extend":
        k = rng.choice([1, 100, 65536])
        return data + rng.randbytes(k), suffix, f"{name} + {k} random bytes"
    if op == "duplicate":
        out, what = duplicate_chunk(rng, data)
        return out, suffix, f"{name}: {what}"
    if op == "other":
        out, what = other_format(rng, seeds)
        return out, ".jpg", f"{what} named .jpg"
    if op == "empty":
        return b"", suffix, "0-byte file"
    return data, rng.choice([".jpg", ".png", ".gif", suffix]), f"{name} unmodified (maybe under another suffix)"


def special_mutant(rng: random.Random, d: Path) -> tuple[Path, str]:
    """A path that is not a plain file: symlinks to /dev/zero, a FIFO, itself, nothing; a folder."""
    kind = rng.choice(["dev-zero", "fifo", "loop", "dangling", "folder"])
    p = d / "x.jpg"
    if kind == "dev-zero":
        os.symlink("/dev/zero", p)
    elif kind == "fifo":
        os.mkfifo(d / "pipe")
        os.symlink(d / "pipe", p)
    elif kind == "loop":
        os.symlink(p, p)
    elif kind == "dangling":
        os.symlink(d / "missing.jpg", p)
    else:
        p.mkdir()
        (p / "inner.jpg").write_bytes(b"\xff\xd8\xff")
    return p, f"x.jpg is {kind}"


# ----------------------------------------------------------------------------- running

def check_decoded(a: Any, channels: int) -> None:
    """A decoded file must be bool / uint8 ``[h, w]`` or (colour target) uint8 ``[h, w, 3]``."""
    ok = isinstance(a, np.ndarray) and a.dtype in (np.bool_, np.uint8) and a.size > 0 and (
        a.ndim == 2 or (channels == 3 and a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8))
    if not ok:
        raise AssertionError(f"decode_image(channels={channels}) gave {type(a).__name__} "
                             f"{getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}")


def fitted_classifier(photos: list[np.ndarray]) -> tuple[Any, set]:
    """The colour bundle fitted on two classes of sample photos (files), or of the generated seeds."""
    from edgemeta.runtime import FewShotClassifier

    classes = sorted(p for p in (SAMPLE / "train").iterdir() if p.is_dir())[:2] if SAMPLE.is_dir() else []
    if len(classes) == 2:
        support = [f for c in classes for f in sorted(c.glob("*.jpg"))[:3]]
        labels = [f.parent.name for f in support]
    else:
        support, labels = photos[:6], ["a", "a", "a", "b", "b", "b"]
    return FewShotClassifier(COLOUR_BUNDLE).fit(support, labels), set(labels)


def steps(path: Path, clf: Any, classes: set) -> list[tuple[str, Callable[[], None]]]:
    def grey() -> None:
        check_decoded(decode_image(path, TARGET, 1), 1)

    def colour() -> None:
        check_decoded(decode_image(path, TARGET, 3), 3)

    def predict() -> None:
        got = clf.predict([path])
        if len(got) != 1 or got[0] not in classes:
            raise AssertionError(f"predict gave {got!r}")
    return [("decode grey", grey), ("decode colour", colour), ("predict", predict)]


def run_one(path: Path, clf: Any, classes: set) -> tuple[str, str, str]:
    """(outcome, step, error) for one mutant: decoded / refused / escaped."""
    refused = ""
    for step, fn in steps(path, clf, classes):
        signal.alarm(HANG_SECONDS)
        try:
            fn()
        except InputError as exc:
            refused = refused or f"{step}: {exc}"[:200]
        except (Exception, Hang) as exc:  # noqa: BLE001 - counting what escapes is the point
            return "escaped", step, f"{type(exc).__name__}: {exc}"[:400]
        finally:
            signal.alarm(0)
    return ("refused", "", refused) if refused else ("decoded", "", "")


CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from edgemeta.contract.image_files import decode_image
from edgemeta.errors import InputError
def kb(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])
open("/proc/self/clear_refs", "w").write("5")        # resets the peak (VmHWM) to the current RSS
before = kb("VmRSS")
for channels in (1, 3):
    try:
        decode_image(sys.argv[2], (84, 84), channels)
    except InputError:
        pass
print((kb("VmHWM") - before) / 1024)
"""


def subprocess_growth_mb(data: bytes, suffix: str) -> float:
    """Peak RSS growth (MB) of a fresh Python decoding ``data`` for both targets, imports excluded."""
    with tempfile.TemporaryDirectory(prefix="image-fuzz-child-") as tmp:
        p = Path(tmp) / f"biggest{suffix}"
        p.write_bytes(data)
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(p)], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode != 0:
            raise RuntimeError(f"the subprocess decoding the biggest mutant failed: {out.stderr[-500:]}")
        return float(out.stdout.strip().splitlines()[-1])


def run(mutants: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    photos, source = seed_photos()
    seeds = encode_seeds(photos)
    from PIL import Image

    size_of = {k: Image.open(io.BytesIO(v[1])).size for k, v in seeds.items()}
    clf, classes = fitted_classifier(photos)
    signal.signal(signal.SIGALRM, _alarm)
    start_rss = peak_rss_mb()
    counts: Counter = Counter()
    escaped: list[dict[str, str]] = []
    biggest: tuple[float, str, bytes, str] = (0.0, "", b"", ".jpg")
    slowest = (0.0, "")
    with tempfile.TemporaryDirectory(prefix="image-fuzz-") as tmp:
        for i in range(mutants):
            d = Path(tmp) / f"m{i:05d}"
            d.mkdir()
            data, suffix = b"", ".jpg"
            if rng.random() < 0.06:
                path, what = special_mutant(rng, d)
            else:
                data, suffix, what = mutant_bytes(rng, seeds, size_of)
                path = d / f"x{suffix}"
                path.write_bytes(data)
            before, t = peak_rss_mb(), time.perf_counter()
            outcome, step, error = run_one(path, clf, classes)
            took = time.perf_counter() - t
            slowest = max(slowest, (took, what))
            if data and (peak_rss_mb() - before > biggest[0] or not biggest[1]):
                biggest = (peak_rss_mb() - before, what, data, suffix)
            counts[outcome] += 1
            if outcome == "escaped":
                escaped.append({"mutant": what, "step": step, "error": error})
            _clean(d)
    growth = peak_rss_mb() - start_rss
    child = subprocess_growth_mb(biggest[2], biggest[3])
    memory_escape = growth > RSS_BOUND_MB or child > RSS_BOUND_MB
    if memory_escape:
        escaped.append({"mutant": biggest[1], "step": "memory",
                        "error": f"peak RSS grew {growth:.0f} MB in the run, {child:.0f} MB in a subprocess"})
    return {"mutants": mutants, "seed": seed, "seeds": f"{len(seeds)} files from {source}",
            "decoded": counts["decoded"], "refused": counts["refused"],
            "escaped": counts["escaped"] + int(memory_escape), "escaped_examples": escaped[:20],
            "rss_growth_mb": round(growth, 1), "biggest_mutant": biggest[1],
            "biggest_subprocess_growth_mb": round(child, 1),
            "slowest_seconds": round(slowest[0], 3), "slowest_mutant": slowest[1]}


def _clean(d: Path) -> None:
    """Remove one mutant's folder (it may hold symlinks, a FIFO or a folder named x.jpg)."""
    for root, dirs, names in os.walk(d, topdown=False):
        for n in names:
            os.unlink(os.path.join(root, n))
        for n in dirs:
            q = os.path.join(root, n)
            os.unlink(q) if os.path.islink(q) else os.rmdir(q)
    os.rmdir(d)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.mutants < 1:
        ap.error("--mutants must be at least 1")
    res = run(args.mutants, args.seed)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"image files: {res['mutants']} mutants (seed {res['seed']}; seeds: {res['seeds']})")
        print(f"  decoded  {res['decoded']:5d}   (grey, colour and predict all answered)")
        print(f"  refused  {res['refused']:5d}   (InputError)")
        print(f"  escaped  {res['escaped']:5d}   (other exception, wrong answer, hang > {HANG_SECONDS} s, memory)")
        print(f"  peak RSS growth {res['rss_growth_mb']} MB over the run; biggest mutant "
              f"({res['biggest_mutant']}) alone in a subprocess: {res['biggest_subprocess_growth_mb']} MB")
        print(f"  slowest  {res['slowest_seconds']:.3f} s  ({res['slowest_mutant']})")
        for e in res["escaped_examples"]:
            print(f"  ESCAPED [{e['step']}] {e['mutant']}: {e['error']}")
    return 1 if res["escaped"] else 0


if __name__ == "__main__":
    sys.exit(main())
