"""The Python runtime measured exactly like bench.js, for a side-by-side latency comparison.

    python examples/node/bench_python.py [BUNDLE] [--repeats N] [--precision auto|fp32|int8] [--json]

Same bundle, same synthetic raw 105x105 uint8 images, one intra-op thread, 10 warm-up runs, median
and 10th / 90th percentiles: fit() on 5-way 5-shot (preprocess + embed + adapt), predict() on one
image, and predict() on 75 images per image.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime

from edgemeta.runtime import Bundle, FewShotClassifier

WARMUP = 10


def image(k: int) -> np.ndarray:
    """The same pattern as bench.js's image(k)."""
    r, c = np.mgrid[0:105, 0:105]
    return np.where((r * 7 + c * 13 + k * 17) % 23 < 3, 255, 0).astype(np.uint8)


def timeit(fn, repeats: int) -> dict:
    for _ in range(WARMUP):
        fn()
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        ms.append((time.perf_counter_ns() - t0) / 1e6)
    ms.sort()
    q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]  # noqa: E731 - same rule as bench.js
    return {"median_ms": q(0.5), "p10_ms": q(0.1), "p90_ms": q(0.9), "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?", default=str(Path(__file__).resolve().parents[2] / "models" / "omniglot-conv4-proto"))
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--precision", default="auto", help="auto | fp32 | int8 (needs a runtime with int8 support)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    kwargs = {} if a.precision == "auto" else {"precision": a.precision}
    clf = FewShotClassifier(Bundle.load(a.bundle, threads=1, **kwargs))
    support = [image(k) for k in range(25)]
    labels = [f"class{k // 5}" for k in range(25)]
    one = [image(100)]
    batch = [image(200 + k) for k in range(75)]
    clf.fit(support, labels)
    res = {"runtime": f"python onnxruntime {onnxruntime.__version__}", "bundle": a.bundle, "threads": 1,
           "precision": getattr(clf.bundle, "precision", "fp32"),
           "adapt_5w5s": timeit(lambda: clf.fit(support, labels), a.repeats),
           "predict_1": timeit(lambda: clf.predict(one), a.repeats),
           "predict_batch75": timeit(lambda: clf.predict(batch), a.repeats)}
    res["predict_batch75_per_image_ms"] = res["predict_batch75"]["median_ms"] / 75
    if a.json:
        print(json.dumps(res, indent=2))
        return
    f = lambda r: (f"median {r['median_ms']:.3f} ms (p10 {r['p10_ms']:.3f}, p90 {r['p90_ms']:.3f}) "  # noqa: E731
                   f"over {r['repeats']}")
    print(f"{res['runtime']}, 1 intra-op thread, {res['precision']} backbone, bundle {a.bundle}")
    print(f"adapt 5-way 5-shot (25 raw 105x105 images, embedding included): {f(res['adapt_5w5s'])}")
    print(f"predict 1 image:                                              {f(res['predict_1'])}")
    print(f"predict 75 images at once:                                    {res['predict_batch75_per_image_ms']:.3f} ms per image")


if __name__ == "__main__":
    main()
