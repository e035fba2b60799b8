"""Peer: meta-training throughput of easyfsl's Prototypical Networks on the same conv4 and episodes.

    .venvs/easyfsl/bin/python tools/bench/easyfsl_peer.py [--threads 1] [--warmup 5] [--measure 30]

Own venv (``.venvs/easyfsl``): easyfsl 1.5.0 imports torchvision (``easyfsl.methods`` ->
``easyfsl.modules.resnet``), so ``--no-deps`` beside torch 2.13.0 does not import; the venv has
torch 2.14.1 + torchvision 0.29.1 (the CUDA build on this disk, run on the CPU).

Backbone: the same conv4 as edgemeta's (4 x [conv3x3-64, BatchNorm, ReLU, maxpool2], flatten: 64-d
at 28x28), defined here in plain torch. Episodes: ``build/bench/train_60w1s5q`` (60-way 1-shot
5-query Omniglot 28x28, the very episodes edgemeta's trainer is timed on), converted to float tensors
before timing. The step is easyfsl's documented episodic training step (its
``notebooks/episodic_training.ipynb``):

    optimizer.zero_grad(); model.process_support_set(support, support_labels)
    scores = model(query); loss = CrossEntropyLoss()(scores, query_labels); loss.backward()
    optimizer.step(); loss.item()

with Adam lr 1e-3 (as edgemeta). ``torch.set_num_threads(N)``; with N = 1 the process is pinned to
one core. Only these steps are timed, after ``--warmup`` steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, load_episodes, pin_one_core  # noqa: E402


def conv4():
    from torch import nn

    def block(cin: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(1), block(64), block(64), block(64), nn.Flatten())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--measure", type=int, default=30)
    ap.add_argument("--channels-last", action="store_true",
                    help="not easyfsl's documented step: model and episodes in NHWC (torch.channels_last) by hand, "
                         "to show what that layout alone is worth")
    a = ap.parse_args(argv)
    if a.threads == 1:
        pin_one_core()
    import easyfsl
    import torch
    from easyfsl.methods import PrototypicalNetworks
    from torch import nn

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    eps = load_episodes("train_60w1s5q")
    meta = eps["meta"]
    ways, shots, queries = meta["ways"], meta["shots"], meta["queries"]
    total = a.warmup + a.measure
    x = torch.from_numpy(np.ascontiguousarray(eps["x"][:total], dtype=np.float32))   # [E, 360, 1, 28, 28]
    ns = ways * shots
    support_labels = torch.arange(ways).repeat_interleave(shots)
    query_labels = torch.arange(ways).repeat_interleave(queries)

    backbone = conv4()
    episodes = [x[e] for e in range(total)]                                       # [360, 1, 28, 28] each
    if a.channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
        episodes = [e.contiguous(memory_format=torch.channels_last) for e in episodes]
    model = PrototypicalNetworks(backbone)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    wall, cpu, losses = [], [], []
    for e in range(total):
        support, query = episodes[e][:ns], episodes[e][ns:]
        c0, t0 = time.process_time(), time.perf_counter()
        opt.zero_grad()
        model.process_support_set(support, support_labels)
        scores = model(query)
        loss = criterion(scores, query_labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    w, c = np.array(wall[a.warmup:]), np.array(cpu[a.warmup:])
    emit({"peer": "easyfsl", "easyfsl": getattr(easyfsl, "__version__", "1.5.0"), "torch": torch.__version__,
          "threads": a.threads, "channels_last": a.channels_last,
          "episode": f"{ways}-way {shots}-shot {queries}-query",
          "method": "PrototypicalNetworks (conv4, euclidean -cdist)", "optimizer": "Adam lr 1e-3",
          "warmup_steps": a.warmup, "measured_steps": len(w),
          "episodes_per_s_wall": round(float(len(w) / w.sum()), 4),
          "episodes_per_s_cpu": round(float(len(c) / c.sum()), 4),
          "step_ms_median_wall": round(float(np.median(w) * 1e3), 2),
          "step_ms_median_cpu": round(float(np.median(c) * 1e3), 2),
          "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
