"""Few-shot regression accuracy through the device runtime: mean squared error on new tasks with its 95% CI.

Each task is adapted from ``support`` samples with a fresh :class:`FewShotRegressor` and scored by
the mean squared error over ``queries`` query points; the figure is the mean over ``tasks`` tasks with
``1.96 * std / sqrt(tasks)``, as the MAML and Meta-SGD papers report it. Sinusoid tasks come from a
seed stream (:data:`~edgemeta.data.sinusoid.TEST_SEED` by default) that meta-training never draws from.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgemeta.data.sinusoid import TEST_SEED, sample_tasks
from edgemeta.metrics import mean_ci95
from edgemeta.runtime.regression_bundle import RegressionBundle
from edgemeta.runtime.regressor import FewShotRegressor


def evaluate_regression(bundle: RegressionBundle, support: int, queries: int = 100, tasks: int = 1000,
                        seed: int = TEST_SEED) -> dict[str, Any]:
    """Query MSE over ``tasks`` sinusoid tasks of ``support`` points each (stream ``[seed, support]``)."""
    if support < 1 or queries < 1 or tasks < 1:
        raise ValueError(f"support, queries and tasks must be >= 1, got {support}, {queries}, {tasks}")
    b = sample_tasks(np.random.default_rng([seed, support]), tasks, support, queries)
    mse = np.empty(tasks)
    t0 = time.perf_counter()
    for i in range(tasks):
        reg = FewShotRegressor(bundle).fit(b.x_support[i], b.y_support[i])
        pred = reg.predict(b.x_query[i])
        mse[i] = float(np.mean((pred.astype(np.float64) - b.y_query[i][:, 0]) ** 2))
    seconds = time.perf_counter() - t0
    mean, ci = mean_ci95(mse)
    return {"mse": mean, "ci95": ci, "median": float(np.median(mse)), "tasks": tasks, "support": support,
            "queries": queries, "seed": seed, "ms_per_task": 1000 * seconds / tasks}
