"""Sinusoid regression tasks of MAML (Finn et al. 2017) and Meta-SGD (Li et al. 2017).

A task is ``y = A sin(x - phase)`` with amplitude ``A ~ U[0.1, 5.0]``, phase ``~ U[0, pi]`` and
inputs ``x ~ U[-5, 5]``; targets are noise-free. Tasks are drawn from a seeded numpy generator, so
a split is a seed stream: meta-training draws from ``seed`` and evaluation from :data:`TEST_SEED`
(a different stream of new tasks; continuous task parameters never repeat exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, float(np.pi))
X_RANGE = (-5.0, 5.0)
TEST_SEED = 2_000_003          # evaluation tasks (never used for meta-training)
VAL_SEED = 1_000_003           # model selection during meta-training


@dataclass(frozen=True)
class SinusoidBatch:
    """``T`` tasks: support ``x_support [T, K, 1]``, ``y_support [T, K, 1]``, queries ``x_query [T, Q, 1]``,
    ``y_query [T, Q, 1]`` (float32) and each task's ``amplitude [T]`` and ``phase [T]`` (float64)."""

    x_support: np.ndarray
    y_support: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray


def sinusoid(x: np.ndarray, amplitude: np.ndarray | float, phase: np.ndarray | float) -> np.ndarray:
    """``A sin(x - phase)``, broadcast (float64)."""
    return np.asarray(amplitude, np.float64) * np.sin(np.asarray(x, np.float64) - np.asarray(phase, np.float64))


def sample_tasks(rng: np.random.Generator, tasks: int, support: int, queries: int) -> SinusoidBatch:
    """``tasks`` new tasks with ``support`` and ``queries`` points each, drawn independently from ``rng``."""
    if tasks < 1 or support < 0 or queries < 0:
        raise ValueError(f"tasks >= 1, support >= 0 and queries >= 0 expected, got {tasks}, {support}, {queries}")
    amp = rng.uniform(*AMPLITUDE, size=tasks)
    phase = rng.uniform(*PHASE, size=tasks)
    x = rng.uniform(*X_RANGE, size=(tasks, support + queries, 1))
    y = sinusoid(x, amp[:, None, None], phase[:, None, None])
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    return SinusoidBatch(x32[:, :support], y32[:, :support], x32[:, support:], y32[:, support:], amp, phase)
