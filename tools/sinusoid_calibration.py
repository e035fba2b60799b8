"""How honest an alpaca bundle's predictive std is: the share of true values within mean ± 2 std, and
mean std against root mean squared error, inside the tasks' input range [-5, 5] and outside it
(5 < |x| <= 7), over new test tasks (seed stream TEST_SEED + 2), through the device runtime::

    python tools/sinusoid_calibration.py models/sinusoid-alpaca --tasks 1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def calibration(bundle: Path, tasks: int, shots: tuple[int, ...] = (5, 10, 20)) -> dict[str, dict[str, float]]:
    from edgemeta.data.sinusoid import TEST_SEED, sample_tasks, sinusoid
    from edgemeta.runtime.regressor import FewShotRegressor

    reg = FewShotRegressor(bundle)
    out = {}
    for k in shots:
        b = sample_tasks(np.random.default_rng([TEST_SEED + 2, k]), tasks, k, 100)
        rng = np.random.default_rng([TEST_SEED + 3, k])
        rows = {"inside": [], "outside": []}
        for t in range(tasks):
            reg.fit(b.x_support[t], b.y_support[t])
            outside = (rng.uniform(5, 7, size=(100, 1)) * rng.choice([-1, 1], size=(100, 1))).astype(np.float32)
            for name, xq in (("inside", b.x_query[t]), ("outside", outside)):
                mean, std = reg.predict(xq, return_std=True)
                err = mean - sinusoid(xq[:, 0], b.amplitude[t], b.phase[t])
                rows[name].append((np.mean(np.abs(err) <= 2 * std), np.mean(err ** 2), np.mean(std)))
        out[f"k{k}"] = {f"{name}_{m}": float(v) for name, r in rows.items()
                        for m, v in zip(("coverage_2std", "mse", "mean_std"), np.mean(np.array(r), 0))}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--tasks", type=int, default=1000)
    args = ap.parse_args()
    print(json.dumps(calibration(args.bundle, args.tasks), indent=1))
