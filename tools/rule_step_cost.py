"""Meta-training cost per episode of several rules, measured side by side in one process.

    python tools/rule_step_cost.py --methods proto recurrent [--ways 20 --shots 5 --queries 5] [--steps 40]

Each rule gets its own run context (:func:`edgemeta.train.trainer.setup_run`, conv4, in a temporary
folder) and takes ``edgemeta train``'s own training step (:meth:`EpisodeSteps.gradient_step`: one
Omniglot training episode, forward, cross-entropy, backward, Adam); the rules' steps are interleaved
step by step, so a busy machine slows them alike. Reported per rule: the median process CPU time and wall time of a step, and each
rule's cost relative to the first rule's: the number that turns "equal training time" into episodes
(``--episodes E`` of the first rule cost as much as ``E / ratio`` episodes of another). Printed,
never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from edgemeta.data.omniglot import load_omniglot
from edgemeta.train.trainer import EpisodeSteps, TrainConfig, setup_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["proto", "recurrent"])
    ap.add_argument("--ways", type=int, default=20)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="measured steps per rule (after 5 warm-up steps)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--omniglot", default=None, help="Omniglot folder (default: ../shared/data/omniglot)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train = load_omniglot("vinyals", "train", args.omniglot)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            cfg = TrainConfig.for_method(name, ways=args.ways, shots=args.shots, queries=args.queries,
                                         device="cpu", max_episodes=5 + args.steps)
            steps = EpisodeSteps(setup_run(cfg, train, f"{tmp}/{name}", None, resume=False), train)
            runs.append((name, steps, [], []))
        for step in range(5 + args.steps):
            for name, steps, cpu, wall in runs:
                c0, w0 = time.process_time(), time.perf_counter()
                steps.gradient_step(step)
                if step >= 5:
                    cpu.append(time.process_time() - c0)
                    wall.append(time.perf_counter() - w0)
    base = statistics.median(runs[0][2])
    print(f"{args.ways}-way {args.shots}-shot {args.queries}-query Omniglot episodes, conv4, {args.threads} thread(s), "
          f"median of {args.steps} interleaved steps per rule")
    print(f"{'rule':12s} {'CPU ms/step':>12s} {'wall ms/step':>13s} {'CPU / ' + runs[0][0]:>14s}")
    for name, _, cpu, wall in runs:
        c = statistics.median(cpu)
        print(f"{name:12s} {1e3 * c:12.1f} {1e3 * statistics.median(wall):13.1f} {c / base:14.3f}")


if __name__ == "__main__":
    main()
