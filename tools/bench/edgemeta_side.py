"""edgemeta's side of the peer comparisons, measured with the same harness as the peers.

    .venv/bin/python tools/bench/edgemeta_side.py runtime [--precision fp32] [--episodes 600]
    .venv/bin/python tools/bench/edgemeta_side.py train [--threads 1] [--warmup 5] [--measure 30]

``runtime`` (device side: numpy + onnxruntime, ``Bundle.load(..., threads=1)``, one core): cold start
(``Bundle.load``: read, verify sha256, build the three sessions), embedding ms per image at batch 1
and 25, 5-way 5-shot adapt with the embedding of the 25 support images (``Bundle.embed`` +
``Bundle.adapt``) and without it, ``FewShotClassifier.fit`` on the same 25 raw 28x28 images (adds
preprocessing and label handling), classify per query, peak RSS; then accuracy on the exported test
episodes (``build/bench/test_5w5s``, the ones the ONNX Runtime training peer is scored on).

``train`` (workstation side, torch): episodes per second of ``edgemeta.train.trainer.meta_train`` on
60-way 1-shot 5-query Omniglot episodes, conv4 + proto, Adam 1e-3, CPU, ``torch.set_num_threads(N)``.
Only training steps are timed: the trainer's ``TrainHooks.on_step`` reports each step's own wall and
CPU time (forward, loss, backward, Adam step), kept after ``--warmup`` steps; data loading is
excluded by serving ``EpisodeSampler.batch_indices`` from the exported ``build/bench/train_60w1s5q``
rows (the same episodes, the same rows, computed beforehand; the step still gathers the images).
Validation runs once at the end, outside the timed steps.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BUNDLE, as_float, current_rss_mb, emit, load_episodes, mean_ci95, peak_rss_mb, pin_one_core, timeit  # noqa: E402


if TYPE_CHECKING:
    from edgemeta.runtime import Bundle


def load_bundle(precision: str) -> Bundle:
    """The shipped bundle with one intra-op thread at ``precision`` (fp32 also from a runtime without it)."""
    from edgemeta.runtime import Bundle

    try:
        return Bundle.load(BUNDLE, threads=1, precision=precision)
    except TypeError:                       # a runtime without precision= (fp32 only)
        if precision != "fp32":
            raise
        return Bundle.load(BUNDLE, threads=1)


def cmd_runtime(a: argparse.Namespace) -> dict:
    pin_one_core()
    rss0 = current_rss_mb()
    import onnxruntime as ort

    from edgemeta.runtime import FewShotClassifier

    rss_import = current_rss_mb()
    t0 = time.perf_counter()
    b = load_bundle(a.precision)
    cold = (time.perf_counter() - t0) * 1e3
    eps = load_episodes("test_5w5s")
    sx = as_float(eps["support_x"][0])
    qx = as_float(eps["query_x"][0])
    ys = np.asarray(eps["support_y"])
    yq = np.asarray(eps["query_y"])
    onehot = np.eye(5, dtype=np.float32)[ys]
    one = sx[:1].copy()
    z = b.embed(sx)
    zq = b.embed(qx)
    params = b.adapt(z, onehot)
    clf = FewShotClassifier(b)
    raw = sx[:, 0]                                   # [25, 28, 28] float in [0, 1], as an app passes them
    W, R = a.warmup, a.repeat
    out = {
        "side": "edgemeta", "precision": getattr(b, "precision", "fp32"), "onnxruntime": ort.__version__,
        "threads": 1, "cold_start_load_ms": round(cold, 2), "rss_before_import_mb": rss0,
        "rss_after_import_mb": rss_import,
        "embed_ms_per_image": {"1": timeit(lambda: b.embed(one), W, R),
                               "25": timeit(lambda: b.embed(sx), W, R, per=25)},
        "adapt_5w5s_ms": {"with_embedding": timeit(lambda: b.adapt(b.embed(sx), onehot), W, R),
                          "embeddings_only": timeit(lambda: b.adapt(z, onehot), W, R)},
    }
    # what the ONNX Runtime training peer's latency phase also does: embed 25 + adapt, nothing bigger
    out["peak_rss_mb_adapt_phase"] = peak_rss_mb()
    out["adapt_5w5s_ms"]["classifier_fit_raw_images"] = timeit(lambda: clf.fit(raw, ys), W, R)
    out["classify_ms_per_query"] = timeit(lambda: b.classify(zq, params), W, R, per=len(zq))
    out["predict_75_queries_with_embedding_ms"] = timeit(lambda: b.classify(b.embed(qx), params), W, R)
    out["peak_rss_mb_latency_phase"] = peak_rss_mb()
    n = min(a.episodes, len(eps["support_x"]))
    if n == 0:                                      # latency-only run (report.py's later rounds)
        return out
    t0 = time.perf_counter()
    accs = []
    for e in range(n):
        p = b.adapt(b.embed(as_float(eps["support_x"][e])), onehot)
        pred = b.classify(b.embed(as_float(eps["query_x"][e])), p).argmax(1)
        accs.append(float((pred == yq).mean() * 100.0))
    acc, ci = mean_ci95(accs)
    out["accuracy"] = {"mean": round(acc, 3), "ci95": round(ci, 3), "episodes": n, "ways": 5, "shots": 5,
                       "queries": 15, "seed": eps["meta"]["seed"], "split": "vinyals test",
                       "seconds": round(time.perf_counter() - t0, 2),
                       "per_episode": [round(v, 3) for v in accs]}
    return out


def cmd_train(a: argparse.Namespace) -> dict:
    if a.threads == 1:
        pin_one_core()
    import torch

    import edgemeta.train.trainer as T
    from edgemeta.data import EpisodeSampler, load_omniglot

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    eps = load_episodes("train_60w1s5q")
    meta = eps["meta"]
    rows = np.asarray(eps["rows"])
    total = a.warmup + a.measure
    if total > len(rows):
        raise SystemExit(f"only {len(rows)} exported episodes; re-run episodes.py --train-episodes {total}")
    train = load_omniglot("vinyals", "train")
    val = load_omniglot("vinyals", "val")

    # data loading excluded: the trainer's sampler answers from the precomputed rows
    orig_batch = EpisodeSampler.batch_indices
    key = (meta["ways"], meta["shots"], meta["queries"], meta["seed"])
    served = []

    def cached(self, start: int, count: int) -> np.ndarray:
        if (self.ways, self.shots, self.queries, self.seed) == key and start + count <= len(rows):
            served.append(start)
            return np.array(rows[start:start + count])      # writable copy (the file is memory-mapped)
        return orig_batch(self, start, count)

    check = orig_batch(EpisodeSampler(train, meta["ways"], meta["shots"], meta["queries"], meta["seed"]), 0, 2)
    if not np.array_equal(check, rows[:2]):
        raise SystemExit("exported training episodes differ from EpisodeSampler's; re-run episodes.py")

    # the trainer times each of its steps and reports them through the hook (only the meta phase kept)
    step_s, step_cpu = [], []

    def on_step(phase: str, done: int, wall_s: float, cpu_s: float) -> None:
        if phase == "meta":
            step_s.append(wall_s)
            step_cpu.append(cpu_s)

    EpisodeSampler.batch_indices = cached
    try:
        cfg = T.TrainConfig(method="proto", backbone="conv4", ways=meta["ways"], shots=meta["shots"],
                            queries=meta["queries"], max_episodes=total, lr=1e-3, val_every=10**9,
                            val_episodes=20, seed=meta["seed"], device="cpu")
        with tempfile.TemporaryDirectory() as tmp:
            rec = T.meta_train(cfg, train, val, tmp, progress=False, log=lambda s: None,
                               hooks=T.TrainHooks(on_step=on_step))
    finally:
        EpisodeSampler.batch_indices = orig_batch
    wall = np.array(step_s[a.warmup:])
    cpu = np.array(step_cpu[a.warmup:])
    return {
        "side": "edgemeta", "what": "meta_train step (edgemeta.train.trainer.meta_train)", "torch": torch.__version__,
        "threads": a.threads, "episode": f"{meta['ways']}-way {meta['shots']}-shot {meta['queries']}-query",
        "method": "proto (conv4)", "optimizer": "Adam lr 1e-3", "warmup_steps": a.warmup, "measured_steps": len(wall),
        "episodes_per_step": 1, "steps_served_from_cache": len(served), "episodes_trained": rec.get("episodes"),
        "config": cfg.to_json(),
        "episodes_per_s_wall": round(float(len(wall) / wall.sum()), 4),
        "episodes_per_s_cpu": round(float(len(cpu) / cpu.sum()), 4),
        "step_ms_median_wall": round(float(np.median(wall) * 1e3), 2),
        "step_ms_median_cpu": round(float(np.median(cpu) * 1e3), 2),
        "final_train_loss_note": "not comparable across peers (different logits scale)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("runtime")
    r.add_argument("--precision", default="fp32")
    r.add_argument("--episodes", type=int, default=600)
    r.add_argument("--warmup", type=int, default=20)
    r.add_argument("--repeat", type=int, default=100)
    t = sub.add_parser("train")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--measure", type=int, default=30)
    a = ap.parse_args(argv)
    emit(cmd_runtime(a) if a.cmd == "runtime" else cmd_train(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
