"""Meta-training: optional many-class pre-training, then episodic meta-training (gradient or Reptile),
with periodic validation on held-out classes and best-checkpoint keeping.

A run directory holds ``run.json`` (config, history, best validation) and ``best.npz`` (weights of
the best validation so far), both written atomically after every validation.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgemeta import __version__
from edgemeta.data.classes import ClassImages
from edgemeta.data.episodes import EpisodeSampler
from edgemeta.metrics import mean_ci95
from edgemeta.train.augment import random_affine
from edgemeta.train.checkpoint import load_json, load_weights, save_json, save_weights
from edgemeta.train.distributed import (Dist, average_buffers, average_gradients, barrier, broadcast_flag,
                                        init_from_env)
from edgemeta.train.model import FewShotModel
from edgemeta.train.resume import has_checkpoint, load_checkpoint, save_checkpoint

# Per-method defaults a user gets without flags (``edgemeta train --method M``).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "proto": {},
    "metasgd": {"method_kwargs": {"steps": 3, "init_lr": 0.1}},
    "ridge": {"method_kwargs": {"init_lambda": 1.0, "init_alpha": 10.0}},
    "finetune": {"pretrain_steps": 20_000, "max_episodes": 0, "method_kwargs": {"steps": 100, "lr": 0.1}},
}


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
    lr_halve_every: int = 2_000        # episodes (or pre-training steps)
    meta: str = "gradient"             # gradient | reptile
    reptile_inner_steps: int = 5
    reptile_inner_lr: float = 1e-3
    reptile_outer_lr: float = 1.0
    pretrain_steps: int = 0            # many-class classification steps before episodes
    pretrain_batch: int = 256
    augment: bool = False
    amp: bool = False                  # bf16 autocast (CUDA, or CPUs with bf16 units)
    channels_last: bool = True         # NHWC activations: faster convolutions, pooling and BatchNorm on CPU
    val_every: int = 1_000             # episodes (or pre-training steps)
    val_episodes: int = 400
    val_ways: int = 5
    val_shots: int = 1
    val_queries: int = 15
    patience: int = 6                  # validations without improvement before stopping a phase
    seed: int = 0
    device: str = "auto"
    init_from: str | None = None       # run directory whose best.npz starts this run (warm start)
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


def warm_start(model: FewShotModel, run_dir: str | Path) -> None:
    """Load another run's ``best.npz`` into ``model``; the backbone and rule must be the same shape."""
    path = Path(run_dir) / "best.npz"
    if not path.is_file():
        raise ValueError(f"--init-from {run_dir}: no best.npz there (expected a finished `edgemeta train` run)")
    weights = load_weights(path)
    own = model.state_dict()
    missing, extra = sorted(own.keys() - weights.keys()), sorted(weights.keys() - own.keys())
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in weights and weights[k].shape != v.shape]
    if missing or extra or shapes:
        raise ValueError(f"--init-from {run_dir}: its weights do not fit this model (same --method, --backbone and "
                         f"--backbone-kwargs expected); missing {missing[:4]}, unexpected {extra[:4]}, "
                         f"shape mismatches {shapes[:4]}")
    model.load_state_dict(weights)


class _Run:
    """Shared bookkeeping of a run: progress, validation, best checkpoint, resume checkpoints,
    early stopping. Only rank 0 validates, logs and writes; every rank follows its decisions."""

    def __init__(self, cfg: TrainConfig, model: FewShotModel, val: ClassImages, out: Path, device: torch.device,
                 record: dict[str, Any], progress: bool, log: Callable[[str], None], d: Dist,
                 gen: torch.Generator, stop_after: int | None):
        self.cfg, self.model, self.val, self.out, self.device = cfg, model, val, out, device
        self.record, self.progress, self.log, self.d, self.gen = record, progress, log, d, gen
        self.stop_after = stop_after
        self.best_acc = -1.0
        self.interrupted = False
        self.t0 = time.perf_counter() - float(record.get("train_seconds", 0.0))

    def phase(self, name: str, total: int, step: Callable[[int], tuple[float, float, int]], unit: str,
              modules: dict[str, nn.Module], opt: torch.optim.Optimizer, sched: Any,
              start: int = 0, bad: int = 0) -> None:
        """Call ``step(done) -> (loss, acc, advanced)`` from ``start`` to ``total``; validate and
        checkpoint every ``val_every``."""
        cfg = self.cfg
        bar = None
        if self.progress and total > 0 and self.d.main:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=start, unit=unit, desc=name, dynamic_ncols=True, file=sys.stderr)
        done, run_loss, run_acc = start, None, None
        while done < total:
            loss, acc, adv = step(done)
            done += adv
            run_loss = loss if run_loss is None else 0.95 * run_loss + 0.05 * loss
            run_acc = acc if run_acc is None else 0.95 * run_acc + 0.05 * acc
            if bar is not None:
                bar.update(adv)
                bar.set_postfix(loss=f"{run_loss:.3f}", acc=f"{run_acc:.1f}", best=f"{self.best_acc:.2f}")
            if done % cfg.val_every < adv or done >= total:
                average_buffers(self.model, self.d)
                stop = False
                if self.d.main:
                    improved = self.validate(name, done, run_loss, run_acc)
                    bad = 0 if improved else bad + 1
                    stop = bad >= cfg.patience
                    if stop:
                        self.record["stopped"] = f"{name}: no val improvement in {cfg.patience} validations"
                    position = {"phase": name, "done": done, "bad": bad, "best_acc": self.best_acc,
                                "finished": stop or done >= total}
                    save_checkpoint(self.out, modules, opt, sched, self.gen, position)
                    save_json(self.out / "run.json", self.record)
                if broadcast_flag(stop, self.d, self.device):
                    break
                if self.stop_after is not None and done >= self.stop_after:
                    self.interrupted = True
                    self.record["stopped"] = f"interrupted at {name} {done} (stop_after)"
                    break
        if bar is not None:
            bar.close()
        self.record.setdefault("phases", {})[name] = done

    def validate(self, phase: str, done: int, loss: float | None, acc_train: float | None) -> bool:
        cfg = self.cfg
        acc, ci = validate(self.model, self.val, cfg.val_ways, cfg.val_shots, cfg.val_queries,
                           cfg.val_episodes, cfg.seed + 1_000_003, self.device)
        elapsed = round(time.perf_counter() - self.t0, 2)
        self.record["history"].append({"phase": phase, "step": done, "seconds": elapsed, "train_loss": loss,
                                       "train_acc": acc_train, "val_acc": acc, "val_ci95": ci})
        improved = acc > self.best_acc
        if improved:
            self.best_acc = acc
            save_weights(self.out / "best.npz", self.model.state_dict())
            self.record["best"] = {"phase": phase, "step": done, "val_acc": acc, "val_ci95": ci, "seconds": elapsed,
                                   "val_setting": f"{cfg.val_ways}-way {cfg.val_shots}-shot {cfg.val_queries}-query, "
                                                  f"{cfg.val_episodes} episodes"}
        self.record["train_seconds"] = elapsed
        self.log(f"{phase} {done}: val {cfg.val_ways}w{cfg.val_shots}s {acc:.2f} ± {ci:.2f} "
                 f"(best {self.best_acc:.2f}) loss {loss if loss is not None else float('nan'):.3f} [{elapsed:.0f}s]")
        return improved


def meta_train(cfg: TrainConfig, train: ClassImages, val: ClassImages, out_dir: str | Path,
               provenance: dict[str, Any] | None = None, progress: bool = True,
               log: Callable[[str], None] | None = None, resume: bool = False,
               stop_after: int | None = None) -> dict[str, Any]:
    """Train ``cfg.method`` on ``train``; keep the weights best on ``val`` episodes.

    Phases: ``pretrain`` (``cfg.pretrain_steps`` batches of many-class classification over all
    training classes, the transfer-learning recipe) then ``meta`` (``cfg.max_episodes`` episodes,
    gradient or Reptile meta-updates). ``resume``: continue from ``out_dir``'s last checkpoint.
    Under ``torchrun`` each rank runs ``episodes_per_step`` episodes per step and gradients are
    averaged. ``stop_after``: stop at the first checkpoint at or after this step (tests use it to
    interrupt a run). Returns the run record (also ``out_dir/run.json``).
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    if cfg.meta not in ("gradient", "reptile"):
        raise ValueError(f"meta must be 'gradient' or 'reptile', got {cfg.meta!r}")
    out = Path(out_dir)
    device = pick_device(cfg.device)
    d = init_from_env(device.type)
    if d.enabled and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if d.enabled and cfg.meta == "reptile":
        raise ValueError("Reptile is single-process here; run it without torchrun")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed + 7919 * d.rank)
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    model = FewShotModel(cfg.backbone, cfg.method, cfg.image_size, cfg.backbone_kwargs, cfg.method_kwargs).to(device)
    if cfg.init_from and not resume:
        warm_start(model, cfg.init_from)
    images = torch.from_numpy(train.images).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    aug = (lambda x: random_affine(x, gen)) if cfg.augment else (lambda x: x)
    position: dict[str, Any] = {"phase": None}
    if resume:
        if not has_checkpoint(out):
            raise ValueError(f"{out} has no checkpoint to resume from (expected last.json + last.npz)")
        record = load_json(out / "run.json")
        if TrainConfig.from_json(record["config"]) != cfg:
            raise ValueError(f"{out} was started with another configuration; resume it with `edgemeta train "
                             f"--resume {out}` alone")
        position = json.loads((out / "last.json").read_text())["position"]
    else:
        record = {"config": cfg.to_json(), "provenance": provenance or {}, "code_version": __version__,
                  "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                  "world_size": d.world, "history": [], "best": None, "episodes": 0, "train_seconds": 0.0,
                  "stopped": "running (or killed)"}
    run = _Run(cfg, model, val, out, device, record, progress, log, d, gen, stop_after)
    if resume:
        run.best_acc = float(position["best_acc"])
        record["stopped"] = "running (or killed)"
    model.train()
    params = list(model.parameters())

    if cfg.pretrain_steps > 0 and position["phase"] != "meta":
        labels = torch.from_numpy(train.labels()).to(device)
        head = nn.Linear(model.embedding_dim, train.n_classes).to(device)
        opt = torch.optim.Adam([*model.backbone.parameters(), *head.parameters()], lr=cfg.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, max(1, cfg.lr_halve_every), 0.5)
        modules = {"model": model, "pretrain_head": head}
        start, bad = 0, 0
        if position["phase"] == "pretrain":
            load_checkpoint(out, modules, opt, sched, gen)
            start, bad = (cfg.pretrain_steps, 0) if position["finished"] else (position["done"], position["bad"])
        pre_params = [*model.backbone.parameters(), *head.parameters()]

        def pre_step(done: int) -> tuple[float, float, int]:
            rows = torch.randint(0, len(images), (cfg.pretrain_batch,), generator=gen, device=device)
            with amp:
                logits = head(model.backbone(aug(images[rows])))
                loss = F.cross_entropy(logits.float(), labels[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(pre_params, d)
            opt.step()
            sched.step()
            return loss.item(), (logits.argmax(1) == labels[rows]).float().mean().item() * 100, 1

        run.phase("pretrain", cfg.pretrain_steps, pre_step, "step", modules, opt, sched, start, bad)
        position = {"phase": "pretrain-done"}

    if cfg.max_episodes > 0 and not run.interrupted:
        sampler = EpisodeSampler(train, cfg.ways, cfg.shots, cfg.queries, cfg.seed)
        B, n_s = cfg.episodes_per_step, cfg.ways * cfg.shots
        yq = torch.from_numpy(sampler.labels()[1]).to(device)
        onehot = F.one_hot(torch.arange(cfg.ways, device=device).repeat_interleave(cfg.shots), cfg.ways).float()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, max(1, cfg.lr_halve_every // (B * d.world)), 0.5)
        modules = {"model": model}
        start, bad = 0, 0
        if position["phase"] == "meta":
            load_checkpoint(out, modules, opt, sched, gen)
            start, bad = (cfg.max_episodes, 0) if position["finished"] else (position["done"], position["bad"])

        def episode_loss(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Cross-entropy of one episode ``x [ways*(shots+queries), C, H, W]`` (support first)."""
            with amp:
                z = model.backbone(aug(x))
                logits = model.method.episode_logits(z[:n_s].float(), onehot, z[n_s:].float())
            return F.cross_entropy(logits, yq), logits

        def meta_step(done: int) -> tuple[float, float, int]:
            # this rank's episodes: done + rank*B ... (+B); every rank together covers B*world episodes
            rows = torch.from_numpy(sampler.batch_indices(done + d.rank * B, B)).to(device)     # [B, n]
            losses, logits = zip(*(episode_loss(images[rows[b]]) for b in range(B)))   # BatchNorm per episode
            loss = torch.stack(losses).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(params, d)
            opt.step()
            sched.step()
            acc = torch.cat([(lg.argmax(1) == yq).float() for lg in logits]).mean().item() * 100
            return loss.item(), acc, B * d.world

        def reptile_step(done: int) -> tuple[float, float, int]:
            """Reptile (Nichol et al. 2018): move the weights toward the average task-adapted weights."""
            theta = {k: v.detach().clone() for k, v in model.state_dict().items()}
            delta = {k: torch.zeros_like(v) for k, v in theta.items() if v.is_floating_point()}
            rows = sampler.batch_indices(done, B)
            losses, accs = [], []
            for b in range(B):
                model.load_state_dict(theta)
                inner = torch.optim.Adam(model.parameters(), lr=cfg.reptile_inner_lr, betas=(0.0, 0.999))
                x = images[torch.from_numpy(rows[b]).to(device)]
                for _ in range(cfg.reptile_inner_steps):
                    loss, logits = episode_loss(x)
                    inner.zero_grad(set_to_none=True)
                    loss.backward()
                    inner.step()
                losses.append(loss.item())
                accs.append((logits.argmax(1) == yq).float().mean().item() * 100)
                for k, v in model.state_dict().items():
                    if k in delta:
                        delta[k] += v.detach() - theta[k]
            eps = cfg.reptile_outer_lr * (1.0 - done / max(1, cfg.max_episodes))
            model.load_state_dict({k: theta[k] + eps * delta[k] / B if k in delta else theta[k] for k in theta})
            return float(np.mean(losses)), float(np.mean(accs)), B

        run.phase("meta", cfg.max_episodes, reptile_step if cfg.meta == "reptile" else meta_step, "ep",
                  modules, opt, sched, start, bad)
        record["episodes"] = record["phases"]["meta"]
    barrier(d)
    if d.main:
        record["train_seconds"] = round(time.perf_counter() - run.t0, 2)
        if record["stopped"].startswith("running"):
            record["stopped"] = "completed all steps"
        save_json(out / "run.json", record)
    return record
