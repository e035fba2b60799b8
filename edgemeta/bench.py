"""``edgemeta bench``: device-side latency and memory on this machine (numpy + onnxruntime only).

Every figure is a median over ``repeats`` runs after warm-up, on ``threads`` intra-op threads.
Cold start and peak RSS are measured in a fresh Python process: import the runtime, load and
verify the bundle, fit 5 classes, answer the first prediction.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

from edgemeta.runtime.classifier import FewShotClassifier
from edgemeta.runtime.loaded_bundle import Bundle

_COLD = r"""
import time, resource, sys, json
t0 = time.perf_counter()
import numpy as np
from edgemeta.runtime import FewShotClassifier
t1 = time.perf_counter()
clf = FewShotClassifier(sys.argv[1], threads=int(sys.argv[2]), precision=sys.argv[3])
t2 = time.perf_counter()
rng = np.random.default_rng(0)
clf.fit(rng.random((5, 28, 28), dtype=np.float32), list(range(5)))
clf.predict(rng.random((1, 28, 28), dtype=np.float32))
t3 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "first_answer_ms": (t3 - t2) * 1e3,
                  "total_ms": (t3 - t0) * 1e3, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
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


def cold_start(bundle: str, threads: int, precision: str, runs: int = 5) -> dict[str, float]:
    """Median over ``runs`` fresh processes of import, load, first answer; and their peak RSS."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", _COLD, bundle, str(threads), precision], capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        rec = json.loads(p.stdout.strip().splitlines()[-1])
        rec["process_ms"] = (time.perf_counter() - t) * 1e3
        out.append(rec)
    return {k: round(float(np.median([r[k] for r in out])), 2) for k in out[0]}


def run_bench(bundle_path: str, threads: int = 1, repeats: int = 50, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    res: dict[str, Any] = {"bundle": bundle_path, "threads": threads, "repeats": repeats,
                           "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}}
    import onnxruntime as ort

    res["machine"]["onnxruntime"] = ort.__version__
    probe = Bundle.load(bundle_path, threads=threads)
    res["method"], res["default_precision"] = probe.method, probe.precision
    precisions = ["fp32"] + (["int8"] if probe.precision == "int8" else [])
    res["cold_start"] = {p: cold_start(bundle_path, threads, p) for p in precisions}
    res["peak_rss_mb"] = res["cold_start"][probe.precision]["peak_rss_mb"]
    res["cold_start_ms"] = res["cold_start"][probe.precision]["total_ms"]
    res["bundle_load_ms"] = {lvl: median_ms(lambda lvl=lvl: Bundle.load(bundle_path, threads, probe.precision, lvl), 10, 1)
                             for lvl in ("none", "all")}
    res["embed_ms_per_image"] = {}
    for p in precisions:
        b = Bundle.load(bundle_path, threads=threads, precision=p)
        res["embed_ms_per_image"][p] = {}
        for n in (1, 25):
            x = rng.random((n, 1, 28, 28), dtype=np.float32)
            res["embed_ms_per_image"][p][str(n)] = round(median_ms(lambda: b.embed(x), repeats) / n, 4)
    clf = FewShotClassifier(probe)
    res["adapt_ms"] = {}
    for ways, shots in ((5, 1), (5, 5), (20, 5)):
        imgs = rng.random((ways * shots, 28, 28), dtype=np.float32)
        labels = np.repeat(np.arange(ways), shots)
        emb = clf.embed(imgs)
        res["adapt_ms"][f"{ways}w{shots}s"] = {
            "with_embedding": round(median_ms(lambda: clf.fit(imgs, labels), repeats), 3),
            "embeddings_only": round(median_ms(lambda: clf.fit_embeddings(emb, labels), repeats), 3)}
    one = rng.random((1, 28, 28), dtype=np.float32)
    res["predict_ms_per_image"] = round(median_ms(lambda: clf.predict(one), repeats * 4), 4)
    return res


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_bench(r: dict[str, Any]) -> str:
    lines = [f"{r['bundle']} ({r['method']}, default precision {r['default_precision']}), {r['threads']} thread(s), "
             f"{r['machine']['cpu']}, onnxruntime {r['machine']['onnxruntime']}; medians of {r['repeats']} runs"]
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
    return "\n".join(lines)
