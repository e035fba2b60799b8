"""Accuracy as the literature reports it: mean over episodes with a 95% confidence interval."""

from __future__ import annotations

import numpy as np


def mean_ci95(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and half-width of the normal-approximation 95% CI (1.96 * std / sqrt(n)) of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if v.size == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(v.size))
