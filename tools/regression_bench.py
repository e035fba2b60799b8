"""Latency and state size of a regression bundle on this machine, through the device runtime (printed, never
asserted): fit on K samples, partial_fit of one sample into a state already holding many, predict of N
inputs (with std where the rule gives one), forget(group), and the saved state's bytes for 1 and G groups::

    python tools/regression_bench.py models/sinusoid-alpaca --repeats 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()                                                   # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def bench(bundle: Path, repeats: int, threads: int = 1) -> dict[str, object]:
    from edgemeta.runtime.regressor import FewShotRegressor

    reg = FewShotRegressor(bundle, threads=threads)
    d = reg.bundle.input_dim
    rng = np.random.default_rng(0)
    x = lambda n: rng.uniform(-5, 5, size=(n, d)).astype(np.float32)  # noqa: E731
    out: dict[str, object] = {"bundle": str(bundle), "method": reg.bundle.method, "threads": threads,
                              "repeats": repeats, "statistic": "median ms"}
    for k in (5, 20, 100):
        xs = x(k)
        out[f"fit_k{k}_ms"] = _median_ms(lambda: reg.fit(xs, np.sin(xs[:, 0])), repeats)
    reg.fit(x(1000), rng.normal(size=1000), groups=list(range(10)) * 100)
    one = x(1)
    out["partial_fit_one_sample_into_1000_ms"] = _median_ms(lambda: reg.partial_fit(one, [0.0], groups=3), repeats)
    for n in (1, 1000):
        q = x(n)
        out[f"predict_n{n}_ms"] = _median_ms(lambda: reg.predict(q), repeats)
        if reg.bundle.gives_variance:
            out[f"predict_std_n{n}_ms"] = _median_ms(lambda: reg.predict(q, return_std=True), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.state"
        for g in (1, 10):
            r = FewShotRegressor(reg.bundle).fit(x(1000), rng.normal(size=1000), groups=[i % g for i in range(1000)])
            r.save(path)
            out[f"state_bytes_{g}_groups_1000_samples"] = path.stat().st_size

        def forget_and_restore() -> None:
            r.forget(0)
            r.partial_fit(one, [0.0], groups=0)

        out["forget_group_of_10_ms_(with_one_readd)"] = _median_ms(forget_and_restore, repeats)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    print(json.dumps(bench(a.bundle, a.repeats, a.threads), indent=1))
