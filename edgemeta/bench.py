"""``edgemeta bench``: device-side latency and memory on this machine (numpy + onnxruntime only).

Every figure is a median over ``repeats`` runs after warm-up, on ``threads`` intra-op threads.
Cold start and peak RSS are measured in a fresh Python process: import the runtime, load and
verify the bundle, fit 5 classes, answer the first prediction. Inputs have the bundle's own shape:
grey ``[N, H, W]`` floats, colour ``[N, H, W, 3]`` uint8.

Colour bundles also get photo figures (:func:`photo_figures`): embedding one photo of the bundle's
size, adapting 5-way 5-shot from JPEG files (decode included), decoding and preprocessing a
4032x3024 phone-sized JPEG, and a fresh process that adapts from files and predicts that JPEG.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgemeta.contract.preprocess import check_spec
from edgemeta.runtime.classifier import FewShotClassifier
from edgemeta.runtime.loaded_bundle import Bundle

SAMPLE_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-imagenet" / "sample" / "test"
PHONE_PHOTO = (4032, 3024)          # width, height of the large JPEG (a 12-megapixel phone photo)
MAX_FILE_REPEATS = 10               # figures that decode files are slower: at most this many timed runs

_COLD = r"""
import time, resource, sys, json
def peak_mb():   # VmHWM: this process's own peak (ru_maxrss keeps a larger parent's peak across fork + exec)
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
import numpy as np
from edgemeta.runtime import FewShotClassifier
t1 = time.perf_counter()
clf = FewShotClassifier(sys.argv[1], threads=int(sys.argv[2]), precision=sys.argv[3])
t2 = time.perf_counter()
h, w, channels = (int(v) for v in sys.argv[4:7])
files = sys.argv[7:]
if files:                       # photo files: the first five are the support, the last one the query
    support, query = files[:5], files[-1:]
else:
    rng = np.random.default_rng(0)
    shape = (h, w) if channels == 1 else (h, w, 3)
    make = (lambda n: rng.random((n, *shape), dtype=np.float32)) if channels == 1 else \
        (lambda n: rng.integers(0, 256, (n, *shape), dtype=np.uint8))
    support, query = make(5), make(1)
clf.fit(support, list(range(5)))
clf.predict(query)
t3 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "first_answer_ms": (t3 - t2) * 1e3,
                  "total_ms": (t3 - t0) * 1e3, "peak_rss_mb": peak_mb()}))
"""


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    t = []
    for _ in range(repeats):
        s = time.perf_counter()
        fn()
        t.append(time.perf_counter() - s)
    return float(np.median(t) * 1e3)


def cold_start(bundle: str, threads: int, precision: str, runs: int = 5, size: tuple[int, int] = (28, 28),
               channels: int = 1, files: list[str] | None = None) -> dict[str, float]:
    """Median over ``runs`` fresh processes of import, load, first answer; and their peak RSS.

    The process fits 5 random images of ``size`` and ``channels`` and predicts one; with ``files``
    (six image files) it fits the first five and predicts the last, decoding them itself."""
    out = []
    args = [bundle, str(threads), precision, str(size[0]), str(size[1]), str(channels), *(files or [])]
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", _COLD, *args], capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        rec = json.loads(p.stdout.strip().splitlines()[-1])
        rec["process_ms"] = (time.perf_counter() - t) * 1e3
        out.append(rec)
    return {k: round(float(np.median([r[k] for r in out])), 2) for k in out[0]}


def random_images(rng: np.random.Generator, n: int, size: tuple[int, int], channels: int) -> np.ndarray:
    """``n`` raw images as an app holds them: grey float32 ``[n, H, W]``, colour uint8 ``[n, H, W, 3]``."""
    if channels == 1:
        return rng.random((n, *size), dtype=np.float32)
    return rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)


def run_bench(bundle_path: str, threads: int = 1, repeats: int = 50, seed: int = 0,
              cold_runs: int = 5) -> dict[str, Any]:
    """Every figure of ``edgemeta bench`` as a dict (``photos`` only for colour bundles)."""
    rng = np.random.default_rng(seed)
    res: dict[str, Any] = {"bundle": bundle_path, "threads": threads, "repeats": repeats,
                           "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}}
    import onnxruntime as ort

    res["machine"]["onnxruntime"] = ort.__version__
    probe = Bundle.load(bundle_path, threads=threads)
    size, channels = check_spec(probe.preprocess_spec), probe.channels
    res["method"], res["default_precision"] = probe.method, probe.precision
    res["input"] = {"channels": channels, "size": list(size)}
    precisions = ["fp32"] + (["int8"] if probe.precision == "int8" else [])
    res["cold_start"] = {p: cold_start(bundle_path, threads, p, cold_runs, size, channels) for p in precisions}
    res["peak_rss_mb"] = res["cold_start"][probe.precision]["peak_rss_mb"]
    res["cold_start_ms"] = res["cold_start"][probe.precision]["total_ms"]
    res["bundle_load_ms"] = {lvl: median_ms(lambda lvl=lvl: Bundle.load(bundle_path, threads, probe.precision, lvl), 10, 1)
                             for lvl in ("none", "all")}
    res["embed_ms_per_image"] = {}
    for p in precisions:
        b = Bundle.load(bundle_path, threads=threads, precision=p)
        res["embed_ms_per_image"][p] = {}
        for n in (1, 25):
            x = rng.random((n, channels, *size), dtype=np.float32)
            res["embed_ms_per_image"][p][str(n)] = round(median_ms(lambda: b.embed(x), repeats) / n, 4)
    clf = FewShotClassifier(probe)
    res["adapt_ms"] = {}
    for ways, shots in ((5, 1), (5, 5), (20, 5)):
        imgs = random_images(rng, ways * shots, size, channels)
        labels = np.repeat(np.arange(ways), shots)
        emb = clf.embed(imgs)
        res["adapt_ms"][f"{ways}w{shots}s"] = {
            "with_embedding": round(median_ms(lambda: clf.fit(imgs, labels), repeats), 3),
            "embeddings_only": round(median_ms(lambda: clf.fit_embeddings(emb, labels), repeats), 3)}
    one = random_images(rng, 1, size, channels)
    res["predict_ms_per_image"] = round(median_ms(lambda: clf.predict(one), repeats * 4), 4)
    if channels == 3:
        res["photos"] = photo_figures(bundle_path, threads, repeats, precisions, probe.precision, size, cold_runs)
    return res


def photo_files(folder: Path, ways: int = 5, shots: int = 5, seed: int = 0) -> tuple[list[str], list[int], str]:
    """``ways * shots`` JPEG paths (class-major) and their labels ``0..ways-1``: the first ``shots``
    photos of the first ``ways`` classes of the mini-ImageNet sample, or, when it is absent, photos
    generated into ``folder`` (84x84, a smooth colour field per class plus noise, JPEG quality 90).
    Also says where they came from."""
    labels = [c for c in range(ways) for _ in range(shots)]
    classes = sorted(p for p in SAMPLE_PHOTOS.iterdir() if p.is_dir())[:ways] if SAMPLE_PHOTOS.is_dir() else []
    found = [sorted(c.glob("*.jpg"))[:shots] for c in classes]
    if len(found) == ways and all(len(f) == shots for f in found):
        return [str(f) for files in found for f in files], labels, f"mini-ImageNet sample ({SAMPLE_PHOTOS})"
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:84, :84] / 84.0
    out = []
    for c in range(ways):
        base = np.stack([np.sin(xx * (c + 1) * 3), np.cos(yy * (c + 2) * 2), np.sin((xx + yy) * (c + 1))], -1)
        for s in range(shots):
            img = np.clip((base * 0.5 + 0.5) * 255 + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            path = folder / f"class{c}_{s}.jpg"
            Image.fromarray(img).save(path, "JPEG", quality=90)
            out.append(str(path))
    return out, labels, "generated (the mini-ImageNet sample is absent)"


def make_phone_jpeg(path: Path, photo: str, size: tuple[int, int] = PHONE_PHOTO) -> Path:
    """``photo`` upscaled with Pillow (bilinear) to ``size`` (width, height), saved as JPEG quality 90."""
    from PIL import Image

    with Image.open(photo) as im:
        im.convert("RGB").resize(size, Image.Resampling.BILINEAR).save(path, "JPEG", quality=90)
    return path


def photo_figures(bundle_path: str, threads: int, repeats: int, precisions: list[str], default: str,
                  size: tuple[int, int], cold_runs: int = 5) -> dict[str, Any]:
    """The photo figures of a colour bundle: embed one decoded photo (uint8 ``[1, H, W, 3]``) per
    precision; adapt 5-way 5-shot from 25 JPEG files (decode + preprocess + embed + adapt); decode +
    preprocess one 4032x3024 JPEG (draft decoding), and predict it; a fresh process that loads the
    bundle, adapts from 5 JPEG files and predicts the large one (cold start and peak RSS). Figures
    that read files are medians of at most :data:`MAX_FILE_REPEATS` runs after one warm-up."""
    from edgemeta.contract.image_files import decode_image

    n = max(1, min(repeats, MAX_FILE_REPEATS))
    with tempfile.TemporaryDirectory(prefix="edgemeta-bench-") as tmp:
        files, labels, source = photo_files(Path(tmp))
        phone = make_phone_jpeg(Path(tmp) / "phone.jpg", files[0])
        photo = decode_image(files[0], size, 3)
        out: dict[str, Any] = {"source": source, "file_repeats": n, "photo_shape": list(photo.shape),
                               "phone_jpeg": {"width": PHONE_PHOTO[0], "height": PHONE_PHOTO[1],
                                              "megabytes": round(phone.stat().st_size / 1e6, 2)}}
        out["embed_ms_per_photo"] = {}
        for p in precisions:
            clf_p = FewShotClassifier(Bundle.load(bundle_path, threads=threads, precision=p))
            out["embed_ms_per_photo"][p] = round(median_ms(lambda: clf_p.embed(photo[None]), repeats), 4)
        clf = FewShotClassifier(Bundle.load(bundle_path, threads=threads))
        out["adapt_5w5s_from_files_ms"] = round(median_ms(lambda: clf.fit(files, labels), n, 1), 3)
        out["phone_decode_preprocess_ms"] = round(median_ms(lambda: clf.bundle.preprocess([phone]), n, 1), 3)
        out["phone_predict_ms"] = round(median_ms(lambda: clf.predict([phone]), n, 1), 3)
        one_per_class = [files[i] for i in range(0, len(files), len(files) // 5)][:5]
        out["cold_start"] = cold_start(bundle_path, threads, default, cold_runs, size, 3,
                                       [*one_per_class, str(phone)])
        out["peak_rss_mb"] = out["cold_start"]["peak_rss_mb"]
    return out


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_bench(r: dict[str, Any]) -> str:
    """The figures of :func:`run_bench` as the lines ``edgemeta bench`` prints."""
    h, w = r["input"]["size"]
    kind = "grey" if r["input"]["channels"] == 1 else "colour"
    lines = [f"{r['bundle']} ({r['method']}, {kind} {h}x{w}, default precision {r['default_precision']}), "
             f"{r['threads']} thread(s), {r['machine']['cpu']}, onnxruntime {r['machine']['onnxruntime']}; "
             f"medians of {r['repeats']} runs"]
    for p, c in r["cold_start"].items():
        lines.append(f"  cold start {p}: import {c['import_ms']:.0f} ms + load {c['load_ms']:.0f} ms + first answer "
                     f"{c['first_answer_ms']:.0f} ms = {c['total_ms']:.0f} ms; peak RSS {c['peak_rss_mb']:.1f} MB")
    lines.append("  bundle load (verify + sessions): " +
                 ", ".join(f"optimization {k} {v:.1f} ms" for k, v in r["bundle_load_ms"].items()))
    for p, e in r["embed_ms_per_image"].items():
        lines.append(f"  embed {p}: {e['1']:.4f} ms/image at batch 1, {e['25']:.4f} ms/image at batch 25")
    for k, a in r["adapt_ms"].items():
        lines.append(f"  adapt {k}: {a['with_embedding']:.3f} ms with embedding, {a['embeddings_only']:.3f} ms from embeddings")
    lines.append(f"  predict: {r['predict_ms_per_image']:.4f} ms per image (batch 1, embedding included)")
    ph = r.get("photos")
    if ph:
        big = ph["phone_jpeg"]
        lines.append(f"  photos ({ph['source']}; file figures: medians of {ph['file_repeats']} runs):")
        for p, ms in ph["embed_ms_per_photo"].items():
            lines.append(f"    embed one {ph['photo_shape'][0]}x{ph['photo_shape'][1]} photo {p}: {ms:.3f} ms "
                         f"(uint8 array, preprocessing included)")
        lines.append(f"    adapt 5w5s from 25 JPEG files: {ph['adapt_5w5s_from_files_ms']:.1f} ms "
                     f"(decode + preprocess + embed + adapt)")
        lines.append(f"    {big['width']}x{big['height']} JPEG ({big['megabytes']:.1f} MB): decode + preprocess "
                     f"{ph['phone_decode_preprocess_ms']:.1f} ms, predict {ph['phone_predict_ms']:.1f} ms")
        c = ph["cold_start"]
        lines.append(f"    cold start from files (adapt on 5 JPEGs, predict the {big['width']}x{big['height']} one): "
                     f"{c['total_ms']:.0f} ms; peak RSS {c['peak_rss_mb']:.1f} MB")
    return "\n".join(lines)
