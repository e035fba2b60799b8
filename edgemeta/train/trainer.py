"""Episodic meta-training with Adam, periodic validation on held-out classes, best-checkpoint keeping.

A run directory holds ``run.json`` (config, history, best validation) and ``best.npz`` (weights of
the best validation so far), both written atomically after every validation.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgemeta import __version__
from edgemeta.data.classes import ClassImages
from edgemeta.data.episodes import EpisodeSampler
from edgemeta.metrics import mean_ci95
from edgemeta.train.checkpoint import save_json, save_weights
from edgemeta.train.model import FewShotModel


@dataclass
class TrainConfig:
    """Everything that determines a meta-training run (recorded in ``run.json`` and the bundle)."""

    method: str = "proto"
    backbone: str = "conv4"
    dataset: str = "omniglot"          # "omniglot" or a path to a .npz / image folder
    split: str = "vinyals"             # omniglot protocol: vinyals | lake
    image_size: tuple[int, int] = (28, 28)
    ways: int = 60
    shots: int = 1
    queries: int = 5
    episodes_per_step: int = 1
    max_episodes: int = 40_000
    lr: float = 1e-3
    lr_halve_every: int = 2_000        # episodes
    val_every: int = 1_000             # episodes
    val_episodes: int = 400
    val_ways: int = 5
    val_shots: int = 1
    val_queries: int = 15
    patience: int = 6                  # validations without improvement before stopping
    seed: int = 0
    device: str = "auto"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    method_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        d["image_size"] = tuple(d["image_size"])
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


@torch.no_grad()
def validate(model: FewShotModel, data: ClassImages, ways: int, shots: int, queries: int,
             episodes: int, seed: int, device: torch.device) -> tuple[float, float]:
    """Mean accuracy (%) and 95% CI over ``episodes`` fixed episodes, backbone in eval mode.

    Each image is embedded once (eval mode has no batch dependence), then episodes are drawn on
    the embeddings.
    """
    was_training = model.training
    model.eval()
    x = torch.from_numpy(data.images)
    z = torch.cat([model.backbone(x[i:i + 2048].to(device)) for i in range(0, len(x), 2048)])
    sampler = EpisodeSampler(data, ways, shots, queries, seed)
    ys, yq = (torch.from_numpy(a).to(device) for a in sampler.labels())
    onehot = F.one_hot(ys, ways).to(z.dtype)
    accs = []
    for e in range(episodes):
        idx = sampler.indices(e)
        logits = model.method.episode_logits(z[torch.from_numpy(idx.support).to(device)], onehot,
                                             z[torch.from_numpy(idx.query).to(device)])
        accs.append((logits.argmax(1) == yq).float().mean().item() * 100.0)
    model.train(was_training)
    return mean_ci95(accs)


def meta_train(cfg: TrainConfig, train: ClassImages, val: ClassImages, out_dir: str | Path,
               provenance: dict[str, Any] | None = None, progress: bool = True,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Meta-train ``cfg.method`` on episodes of ``train``; keep the weights best on ``val``.

    Returns the run record (also written to ``out_dir/run.json``).
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = FewShotModel(cfg.backbone, cfg.method, cfg.image_size, cfg.backbone_kwargs, cfg.method_kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_halving = max(1, cfg.lr_halve_every // cfg.episodes_per_step)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=steps_per_halving, gamma=0.5)
    sampler = EpisodeSampler(train, cfg.ways, cfg.shots, cfg.queries, cfg.seed)
    images = torch.from_numpy(train.images).to(device)
    B, n_s = cfg.episodes_per_step, cfg.ways * cfg.shots
    yq = torch.from_numpy(sampler.labels()[1]).to(device)
    record: dict[str, Any] = {
        "config": cfg.to_json(), "provenance": provenance or {}, "code_version": __version__,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "history": [], "best": None, "episodes": 0, "train_seconds": 0.0, "stopped": "max_episodes"}
    best_acc, bad = -1.0, 0
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_episodes, unit="ep", dynamic_ncols=True, file=sys.stderr)
    run_loss = run_acc = None
    episode = 0
    model.train()
    while episode < cfg.max_episodes:
        rows = torch.from_numpy(sampler.batch_indices(episode, B)).to(device)   # [B, n]
        z = model.backbone(images[rows.reshape(-1)]).reshape(B, rows.shape[1], -1)
        onehot = F.one_hot(torch.arange(cfg.ways, device=device).repeat_interleave(cfg.shots), cfg.ways).to(z.dtype)
        logits = torch.cat([model.method.episode_logits(z[b, :n_s], onehot, z[b, n_s:]) for b in range(B)])
        target = yq.repeat(B)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        episode += B
        l, a = loss.item(), (logits.argmax(1) == target).float().mean().item() * 100
        run_loss = l if run_loss is None else 0.95 * run_loss + 0.05 * l
        run_acc = a if run_acc is None else 0.95 * run_acc + 0.05 * a
        if bar is not None:
            bar.update(B)
            bar.set_postfix(loss=f"{run_loss:.3f}", acc=f"{run_acc:.1f}", best=f"{best_acc:.2f}")
        if episode % cfg.val_every < B or episode >= cfg.max_episodes:
            acc, ci = validate(model, val, cfg.val_ways, cfg.val_shots, cfg.val_queries,
                               cfg.val_episodes, cfg.seed + 1_000_003, device)
            elapsed = time.perf_counter() - t0
            record["history"].append({"episode": episode, "seconds": round(elapsed, 2), "train_loss": run_loss,
                                      "train_acc": run_acc, "val_acc": acc, "val_ci95": ci,
                                      "lr": opt.param_groups[0]["lr"]})
            if acc > best_acc:
                best_acc, bad = acc, 0
                save_weights(out / "best.npz", model.state_dict())
                record["best"] = {"episode": episode, "val_acc": acc, "val_ci95": ci, "seconds": round(elapsed, 2),
                                  "val_setting": f"{cfg.val_ways}-way {cfg.val_shots}-shot {cfg.val_queries}-query, "
                                                 f"{cfg.val_episodes} episodes"}
            else:
                bad += 1
            record["episodes"], record["train_seconds"] = episode, round(elapsed, 2)
            log(f"episode {episode}: val {cfg.val_ways}w{cfg.val_shots}s {acc:.2f} ± {ci:.2f} "
                f"(best {best_acc:.2f}) loss {run_loss:.3f} [{elapsed:.0f}s]")
            if bad >= cfg.patience:
                record["stopped"] = f"no val improvement in {cfg.patience} validations"
                save_json(out / "run.json", record)
                break
            save_json(out / "run.json", record)
    if bar is not None:
        bar.close()
    record["episodes"], record["train_seconds"] = episode, round(time.perf_counter() - t0, 2)
    save_json(out / "run.json", record)
    return record
