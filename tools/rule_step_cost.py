"""Meta-training cost per episode of several rules, measured side by side in one process.

    python tools/rule_step_cost.py --methods proto recurrent [--ways 20 --shots 5 --queries 5] [--steps 40]

Each rule gets its own conv4 + rule model and Adam; the rules' training steps (forward, cross-entropy,
backward, Adam step on one Omniglot training episode) are interleaved step by step, so a busy machine
slows them alike. Reported per rule: the median process CPU time and wall time of a step, and each
rule's cost relative to the first rule's: the number that turns "equal training time" into episodes
(``--episodes E`` of the first rule cost as much as ``E / ratio`` episodes of another). Printed,
never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from edgemeta.data.episodes import EpisodeSampler
from edgemeta.data.omniglot import load_omniglot
from edgemeta.train.model import FewShotModel
from edgemeta.train.trainer import to_input


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
    sampler = EpisodeSampler(train, args.ways, args.shots, args.queries, seed=0)
    ys, yq = (torch.from_numpy(a) for a in sampler.labels())
    onehot = F.one_hot(ys, args.ways).float()
    runs = []
    for name in args.methods:
        torch.manual_seed(0)
        model = FewShotModel("conv4", name).train()
        runs.append((name, model, torch.optim.Adam(model.parameters(), 1e-3), [], []))
    for step in range(5 + args.steps):
        idx = sampler.indices(step)
        support, query = (to_input(torch.from_numpy(train.batch(i))) for i in (idx.support, idx.query))
        for name, model, opt, cpu, wall in runs:
            c0, w0 = time.process_time(), time.perf_counter()
            logits = model.method.episode_logits(model.backbone(support), onehot, model.backbone(query))
            loss = F.cross_entropy(logits, yq)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step >= 5:
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
    base = statistics.median(runs[0][3])
    print(f"{args.ways}-way {args.shots}-shot {args.queries}-query Omniglot episodes, conv4, {args.threads} thread(s), "
          f"median of {args.steps} interleaved steps per rule")
    print(f"{'rule':12s} {'CPU ms/step':>12s} {'wall ms/step':>13s} {'CPU / ' + runs[0][0]:>14s}")
    for name, _, _, cpu, wall in runs:
        c = statistics.median(cpu)
        print(f"{name:12s} {1e3 * c:12.1f} {1e3 * statistics.median(wall):13.1f} {c / base:14.3f}")


if __name__ == "__main__":
    main()
