"""fp32 vs bf16 autocast, side by side, on colour photos: the same seed, data and steps; prints losses,
validation accuracy and training images per second of each.

    OMP_NUM_THREADS=2 python tools/photo_amp.py --data ~/.cache/mini-imagenet --threads 2

Uses the first ``--train-classes`` train/ and ``--val-classes`` val/ classes (folder links in a
temporary directory), ``--steps`` pre-training batches of ``--batch`` augmented images, then
``--episodes`` 5-way 5-shot proto episodes, a validation after each phase.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from edgemeta.data.sources import training_sets
from edgemeta.train.trainer import TrainConfig, TrainHooks, meta_train


def _subset(root: Path, tmp: Path, n_train: int, n_val: int) -> Path:
    for split, n in (("train", n_train), ("val", n_val)):
        (tmp / split).mkdir(parents=True)
        for c in sorted(p for p in (root / split).iterdir() if p.is_dir())[:n]:
            (tmp / split / c.name).symlink_to(c.resolve())
    return tmp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--train-classes", type=int, default=16)
    ap.add_argument("--val-classes", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backbone", default="conv4")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = _subset(args.data.expanduser(), Path(tmp), args.train_classes, args.val_classes)
        train, val, prov = training_sets(str(root), "vinyals", (84, 84), None)
        results = {}
        for amp in (False, True):
            imgs = {"pretrain": args.batch, "meta": 5 * (5 + 15)}
            seconds = {"pretrain": 0.0, "meta": 0.0}
            steps = {"pretrain": 0, "meta": 0}

            def on_step(phase: str, done: int, wall: float, cpu: float) -> None:
                seconds[phase] += wall
                steps[phase] += 1

            cfg = TrainConfig(device="cpu", method="proto", backbone=args.backbone, dataset=str(root),
                              image_size=(84, 84), ways=5, shots=5, queries=15, max_episodes=args.episodes,
                              pretrain_steps=args.steps, pretrain_batch=args.batch, augment=True, amp=amp,
                              val_every=10**9, val_episodes=200, val_ways=5, val_shots=5, seed=0)
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                rec = meta_train(cfg, train, val, out, provenance=prov, progress=False,
                                 hooks=TrainHooks(on_step=on_step), log=lambda s: None)
                total = time.perf_counter() - t0
            results["bf16" if amp else "fp32"] = {
                "pretrain_img_per_s": round(steps["pretrain"] * imgs["pretrain"] / max(seconds["pretrain"], 1e-9), 1),
                "meta_img_per_s": round(steps["meta"] * imgs["meta"] / max(seconds["meta"], 1e-9), 1),
                "history": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in h.items()
                             if k in ("phase", "step", "train_loss", "train_acc", "val_acc", "val_ci95")}
                            for h in rec["history"]],
                "wall_s": round(total, 1)}
            print(json.dumps({"amp": amp, **results["bf16" if amp else "fp32"]}), flush=True)
        print(f"threads {args.threads}, {train.n_images} train / {val.n_images} val photos; "
              f"pretrain img/s fp32 {results['fp32']['pretrain_img_per_s']} vs bf16 {results['bf16']['pretrain_img_per_s']}, "
              f"meta img/s fp32 {results['fp32']['meta_img_per_s']} vs bf16 {results['bf16']['meta_img_per_s']}")


if __name__ == "__main__":
    main()
