"""Helpers shared by the benchmark scripts (stdlib + numpy only: every peer venv can import this).

Each script prints exactly one line ``BENCH_JSON {...}`` on stdout; ``report.py`` parses it.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / "build" / "bench"          # exported episodes and ORT artifacts (gitignored: /build/)
BUNDLE = REPO / "models" / "omniglot-conv4-proto"
MARK = "BENCH_JSON "


def pin_one_core(core: int = 0) -> None:
    """Run this process on one core (on top of every library's own thread setting): single-thread
    numbers are then not helped by a second core doing allocator or runtime housekeeping."""
    try:
        os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        pass


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def current_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return float("nan")


def _stats(ts: list[float]) -> dict[str, float]:
    ts = sorted(ts)
    q = lambda p: ts[min(len(ts) - 1, int(p * len(ts)))]  # noqa: E731
    return {"median": round(statistics.median(ts), 6), "p10": round(q(0.1), 6), "p90": round(q(0.9), 6)}


def timeit(fn: Callable[[], Any], warmup: int = 10, repeat: int = 50, per: float = 1.0) -> dict[str, Any]:
    """``fn()``'s time in ms (divided by ``per``) after ``warmup`` calls, ``repeat`` times: median,
    p10, p90 of both wall-clock time and this process's CPU time (``time.process_time``).

    Every measured path runs on one thread, so CPU time equals wall time on an idle core; on a shared
    machine (other processes competing for the cores) CPU time is the figure that is not inflated by
    waiting for a core. ``ms`` is the CPU-time median, the one the report compares."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t1, c1 = time.perf_counter(), time.process_time()
        wall.append((t1 - t0) * 1e3 / per)
        cpu.append((c1 - c0) * 1e3 / per)
    c, w = _stats(cpu), _stats(wall)
    return {"ms": c["median"], "cpu": c, "wall": w, "n": repeat, "warmup": warmup}


def loadavg() -> list[float]:
    try:
        return [float(v) for v in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return []


def load_episodes(name: str) -> dict[str, np.ndarray]:
    """Episodes exported by ``tools/bench/episodes.py``: ``build/bench/<name>/*.npy`` memory-mapped
    (only the pages an episode touches count towards RSS)."""
    d = WORK / name
    if not d.is_dir():
        raise SystemExit(f"{d} is missing; run: python tools/bench/episodes.py")
    out = {p.stem: np.load(p, mmap_mode="r") for p in sorted(d.glob("*.npy"))}
    meta = json.loads((d / "meta.json").read_text())
    out["meta"] = meta  # type: ignore[assignment]
    return out


def as_float(x: np.ndarray) -> np.ndarray:
    """uint8 0/1 images -> float32 in [0, 1] (what backbone.onnx takes)."""
    return np.ascontiguousarray(x, dtype=np.float32)


def mean_ci95(values: list[float] | np.ndarray) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    if len(a) < 2:
        return float(a.mean()), 0.0
    return float(a.mean()), float(1.96 * a.std(ddof=1) / np.sqrt(len(a)))


def emit(obj: dict[str, Any]) -> None:
    obj.setdefault("python", sys.version.split()[0])
    obj.setdefault("peak_rss_mb_at_exit", peak_rss_mb())
    obj.setdefault("loadavg_at_exit", loadavg())
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()
