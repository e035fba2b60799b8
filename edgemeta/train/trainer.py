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
from edgemeta.data.unsupervised_tasks import UnlabelledTaskSampler
from edgemeta.errors import InputError
from edgemeta.metrics import mean_ci95
from edgemeta.train.augment import photo_augment, random_affine
from edgemeta.train.checkpoint import load_json, load_weights, save_json, save_weights
from edgemeta.train.distributed import (Dist, average_buffers, average_gradients, barrier, broadcast_flag,
                                        init_from_env)
from edgemeta.train.method_specs import train_defaults
from edgemeta.train.model import FewShotModel
from edgemeta.train.pseudo_classes import cluster_pool
from edgemeta.train.resume import has_checkpoint, load_checkpoint, save_checkpoint
from edgemeta.train.temperature import fit_log_scale
from edgemeta.train.unsupervised_augment import unsupervised_views


@dataclass
class TrainConfig:
    """Everything that determines a meta-training run (recorded in ``run.json`` and the bundle)."""

    method: str = "proto"
    backbone: str = "conv4"
    dataset: str = "omniglot"          # "omniglot" or a path to a .npz / image folder
    split: str = "vinyals"             # omniglot protocol: vinyals | lake
    image_size: tuple[int, int] = (28, 28)
    channels: int = 1                  # 1 grey, 3 RGB photos (follows the training data)
    ways: int = 60
    shots: int = 1
    queries: int = 5
    episodes_per_step: int = 1
    max_episodes: int = 40_000
    lr: float = 1e-3
    meta_lr: float | None = None       # Adam rate of the episodic phase (default: lr), e.g. lower after pre-training
    lr_halve_every: int = 2_000        # episodes (or pre-training steps)
    meta: str = "gradient"             # gradient | reptile
    reptile_inner_steps: int = 5
    reptile_inner_lr: float = 1e-3
    reptile_outer_lr: float = 1.0
    pretrain_steps: int = 0            # many-class classification steps before episodes
    pretrain_batch: int = 256
    augment: bool = False
    unsupervised: bool = False         # tasks from unlabelled images (edgemeta.data.unsupervised_tasks)
    cluster_from: str | None = None    # unsupervised run whose embedding clusters the pool into pseudo-classes
    clusters: int = 0                  # k-means clusters (pseudo-classes) with cluster_from
    amp: bool = False                  # bf16 autocast (CUDA, or CPUs with bf16 units)
    channels_last: bool = True         # NHWC activations: faster convolutions, pooling and BatchNorm on CPU
    val_every: int = 1_000             # episodes (or pre-training steps)
    val_episodes: int = 400
    val_ways: int = 5
    val_shots: int = 1
    val_report_shots: tuple[int, ...] = ()   # more shot counts measured (not selected on) at each validation
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
        d["val_report_shots"] = list(self.val_report_shots)
        return d

    @classmethod
    def for_method(cls, method: str, **fields: Any) -> "TrainConfig":
        """A config with ``method``'s registry defaults (training settings and ``method_kwargs``),
        overridden by ``fields``; ``fields["method_kwargs"]`` is merged over the defaults."""
        defaults = train_defaults(method)
        kwargs = {**defaults["method_kwargs"], **(fields.pop("method_kwargs", None) or {})}
        return cls(method=method, **{**defaults, **fields, "method_kwargs": kwargs})

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        d["image_size"] = tuple(d["image_size"])
        d["val_report_shots"] = tuple(d.get("val_report_shots", ()))
        if d.get("method") == "recurrent" and "memory" not in d.get("method_kwargs", {}):
            # runs recorded before the class-mean layout existed used the GRU-only memory
            d["method_kwargs"] = {**d.get("method_kwargs", {}), "memory": "gru"}
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


def to_input(x: torch.Tensor) -> torch.Tensor:
    """Stored rows -> the backbone's float32 input: uint8 ``v`` becomes ``float32(v) / 255`` (the
    device runtime's value, bit for bit), bool and float32 rows become float32."""
    if x.dtype == torch.uint8:
        return x.float() / torch.tensor(255.0, dtype=torch.float32, device=x.device)
    return x.float()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu, cuda or auto, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


@torch.no_grad()
def embed_all(model: FewShotModel, data: ClassImages, device: torch.device) -> torch.Tensor:
    """``[M, D]`` embeddings of every row of ``data``, backbone in eval mode (no batch dependence)."""
    was_training = model.training
    model.eval()
    n = 2048 if device.type == "cuda" else 32        # rows per forward: small on the CPU to bound host memory
    z = torch.cat([model.backbone(torch.from_numpy(data.batch(slice(i, i + n))).to(device))
                   for i in range(0, data.n_images, n)])
    model.train(was_training)
    return z


@torch.no_grad()
def validate(model: FewShotModel, data: ClassImages, ways: int, shots: int, queries: int,
             episodes: int, seed: int, device: torch.device, z: torch.Tensor | None = None) -> tuple[float, float]:
    """Mean accuracy (%) and 95% CI over ``episodes`` fixed episodes, backbone and rule in eval mode.

    Each image is embedded once (``z``: embeddings already computed by :func:`embed_all`), then
    episodes are drawn on the embeddings.
    """
    z = embed_all(model, data, device) if z is None else z
    sampler = EpisodeSampler(data, ways, shots, queries, seed)
    ys, yq = (torch.from_numpy(a).to(device) for a in sampler.labels())
    onehot = F.one_hot(ys, ways).to(z.dtype)
    accs = []
    was_training = model.method.training
    model.method.eval()                  # the rule as exported (no training-time support sampling)
    try:
        for e in range(episodes):
            idx = sampler.indices(e)
            logits = model.method.episode_logits(z[torch.from_numpy(idx.support).to(device)], onehot,
                                                 z[torch.from_numpy(idx.query).to(device)])
            accs.append((logits.argmax(1) == yq).float().mean().item() * 100.0)
    finally:
        model.method.train(was_training)
    return mean_ci95(accs)


def source_method(run_dir: str | Path) -> str | None:
    """The rule (``--method``) the run in ``run_dir`` trained, from its ``run.json`` (None when unrecorded)."""
    record = Path(run_dir) / "run.json"
    return load_json(record).get("config", {}).get("method") if record.is_file() else None


def warm_start(model: FewShotModel, run_dir: str | Path, method: str) -> str:
    """Load another run's ``best.npz`` into ``model``; the backbone must be the same shape.

    When that run trained the same rule (``method``), everything is loaded; when it trained another
    rule, only the backbone is, and this run's rule starts from its own initialisation (a rule's
    parameters mean nothing to another rule). Returns which: ``"all"`` or ``"backbone"``.
    """
    path = Path(run_dir) / "best.npz"
    if not path.is_file():
        raise InputError(f"--init-from {run_dir}: no best.npz there (expected a finished `edgemeta train` run)")
    weights = load_weights(path)
    own = model.state_dict()
    other = source_method(run_dir)
    part = "backbone" if other is not None and other != method else "all"
    if part == "backbone":
        own = {k: v for k, v in own.items() if k.startswith("backbone.")}
        weights = {k: v for k, v in weights.items() if k.startswith("backbone.")}
    missing, extra = sorted(own.keys() - weights.keys()), sorted(weights.keys() - own.keys())
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in weights and weights[k].shape != v.shape]
    if missing or extra or shapes:
        raise InputError(f"--init-from {run_dir}: its weights do not fit this model (same --backbone and "
                         f"--backbone-kwargs expected, and the same --method to take the rule too); missing "
                         f"{missing[:4]}, unexpected {extra[:4]}, shape mismatches {shapes[:4]}")
    model.load_state_dict(weights, strict=part == "all")
    return part


@dataclass
class TrainHooks:
    """Optional callbacks into :func:`meta_train` (benchmarks, dashboards); they never change training.

    ``on_step(phase, done, wall_seconds, cpu_seconds)``: after each optimizer step of ``pretrain`` or
    ``meta``, with the step's own time (forward, loss, backward, update; nothing else).
    ``on_validate(row)``: after each validation, with the history row appended to ``run.json``.
    """

    on_step: Callable[[str, int, float, float], None] | None = None
    on_validate: Callable[[dict[str, Any]], None] | None = None


StepFn = Callable[[int], tuple[float, float, int]]    # step(done) -> (loss, accuracy %, episodes or steps advanced)


@dataclass
class RunContext:
    """What every phase of a run shares: config, device, processes, model, images, RNG, record."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    d: Dist
    model: FewShotModel
    images: torch.Tensor                     # [N, C, H, W] all training images as stored (bool/uint8/float32), on ``device``
    gen: torch.Generator
    amp: Any                                 # autocast context (disabled unless cfg.amp)
    aug: Callable[[torch.Tensor], torch.Tensor]   # rows of ``images`` -> float32 backbone input (+ random affine)
    record: dict[str, Any]
    position: dict[str, Any]                 # where a resumed run stopped: {"phase": ..., "done": ..., ...}


def setup_run(cfg: TrainConfig, train: ClassImages, out_dir: str | Path, provenance: dict[str, Any] | None,
              resume: bool) -> RunContext:
    """Pick the device and processes, seed, build (or warm-start) the model, load a resumed position."""
    if cfg.meta not in ("gradient", "reptile"):
        raise InputError(f"meta must be 'gradient' or 'reptile', got {cfg.meta!r}")
    if cfg.cluster_from and not cfg.unsupervised:
        raise InputError("pseudo-classes (--cluster-from) are for unsupervised runs; add --unsupervised")
    if cfg.unsupervised and (cfg.pretrain_steps > 0 or cfg.max_episodes <= 0):
        raise InputError("unsupervised meta-training builds episodes from unlabelled images; it needs episodes "
                         "(--episodes > 0) and no many-class pre-training (--pretrain-steps 0), which uses labels")
    out = Path(out_dir)
    device = pick_device(cfg.device)
    d = init_from_env(device.type)
    if d.enabled and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if d.enabled and cfg.meta == "reptile":
        raise InputError("Reptile is single-process here; run it without torchrun")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed + 7919 * d.rank)
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    model = FewShotModel(cfg.backbone, cfg.method, cfg.image_size, cfg.backbone_kwargs, cfg.method_kwargs,
                         in_channels=cfg.channels).to(device)
    if cfg.init_from and not resume:
        warm_start(model, cfg.init_from, cfg.method)
    images = torch.from_numpy(train.pixels).to(device)         # compact; rows become float32 in ``aug``
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    augment = photo_augment if cfg.channels == 3 else random_affine
    if cfg.unsupervised:                      # the views that make one image a class's shots and queries
        augment = unsupervised_views
    aug = (lambda x: augment(to_input(x), gen)) if cfg.augment or cfg.unsupervised else to_input
    position: dict[str, Any] = {"phase": None}
    if resume:
        if not has_checkpoint(out):
            raise InputError(f"{out} has no checkpoint to resume from (expected last.json + last.npz)")
        record = load_json(out / "run.json")
        if TrainConfig.from_json(record["config"]) != cfg:
            raise InputError(f"{out} was started with another configuration; resume it with `edgemeta train "
                             f"--resume {out}` alone")
        position = json.loads((out / "last.json").read_text())["position"]
        record["stopped"] = "running (or killed)"
    else:
        record = {"config": cfg.to_json(), "provenance": provenance or {}, "code_version": __version__,
                  "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                  "world_size": d.world, "history": [], "best": None, "episodes": 0, "train_seconds": 0.0,
                  "stopped": "running (or killed)"}
    return RunContext(cfg, out, device, d, model, images, gen, amp, aug, record, position)


class Run:
    """A run's bookkeeping: progress, validation, best checkpoint, resume checkpoints, early
    stopping. Only rank 0 validates, logs and writes; every rank follows its decisions."""

    def __init__(self, ctx: RunContext, val: ClassImages, progress: bool, log: Callable[[str], None],
                 stop_after: int | None, hooks: TrainHooks):
        self.ctx, self.cfg, self.val = ctx, ctx.cfg, val
        self.progress, self.log, self.stop_after, self.hooks = progress, log, stop_after, hooks
        self.best_acc = float(ctx.position["best_acc"]) if "best_acc" in ctx.position else -1.0
        self.interrupted = False
        self.t0 = time.perf_counter() - float(ctx.record.get("train_seconds", 0.0))

    def resume_point(self, name: str, total: int, modules: dict[str, nn.Module], opt: torch.optim.Optimizer,
                     sched: Any) -> tuple[int, int]:
        """``(start, bad)`` of phase ``name``: ``(0, 0)``, or the checkpoint's position (state loaded)
        when the run being resumed stopped inside this phase."""
        pos = self.ctx.position
        if pos["phase"] != name:
            return 0, 0
        load_checkpoint(self.ctx.out, modules, opt, sched, self.ctx.gen)
        return (total, 0) if pos["finished"] else (pos["done"], pos["bad"])

    def timed(self, name: str, step: StepFn) -> StepFn:
        """``step`` reporting its own wall and CPU time to ``hooks.on_step`` (unchanged without a hook)."""
        on_step = self.hooks.on_step
        if on_step is None:
            return step

        def run_step(done: int) -> tuple[float, float, int]:
            c0, t0 = time.process_time(), time.perf_counter()
            result = step(done)
            on_step(name, done + result[2], time.perf_counter() - t0, time.process_time() - c0)
            return result
        return run_step

    def run_phase(self, name: str, total: int, step: StepFn, unit: str, modules: dict[str, nn.Module],
                  opt: torch.optim.Optimizer, sched: Any, start: int = 0, bad: int = 0) -> None:
        """Call ``step(done)`` from ``start`` to ``total``; validate and checkpoint every ``val_every``."""
        cfg, d = self.cfg, self.ctx.d
        step = self.timed(name, step)
        bar = None
        if self.progress and total > 0 and d.main:
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
                stop, bad = self.checkpoint(name, done, total, run_loss, run_acc, modules, opt, sched, bad)
                if stop:
                    break
        if bar is not None:
            bar.close()
        self.ctx.record.setdefault("phases", {})[name] = done

    def checkpoint(self, name: str, done: int, total: int, loss: float | None, acc: float | None,
                   modules: dict[str, nn.Module], opt: torch.optim.Optimizer, sched: Any,
                   bad: int) -> tuple[bool, int]:
        """Validate (rank 0), save the resume checkpoint and ``run.json``. Returns ``(stop, bad)``:
        whether the phase stops (patience exhausted, or ``stop_after`` reached) and the count of
        validations without improvement."""
        cfg, ctx, d = self.cfg, self.ctx, self.ctx.d
        average_buffers(ctx.model, d)
        stop = False
        if d.main:
            improved = self.validate(name, done, loss, acc)
            bad = 0 if improved else bad + 1
            stop = bad >= cfg.patience
            if stop:
                ctx.record["stopped"] = f"{name}: no val improvement in {cfg.patience} validations"
            if name == "meta":             # an interrupted run's record says how far it got
                ctx.record["episodes"] = done
            position = {"phase": name, "done": done, "bad": bad, "best_acc": self.best_acc,
                        "finished": stop or done >= total}
            save_checkpoint(ctx.out, modules, opt, sched, ctx.gen, position)
            save_json(ctx.out / "run.json", ctx.record)
        if broadcast_flag(stop, d, ctx.device):
            return True, bad
        if self.stop_after is not None and done >= self.stop_after:
            self.interrupted = True
            ctx.record["stopped"] = f"interrupted at {name} {done} (stop_after)"
            return True, bad
        return False, bad

    def validate(self, phase: str, done: int, loss: float | None, acc_train: float | None) -> bool:
        """Validate on held-out classes, append to the history, save ``best.npz`` if it improved."""
        cfg, record = self.cfg, self.ctx.record
        z = embed_all(self.ctx.model, self.val, self.ctx.device)
        acc, ci = validate(self.ctx.model, self.val, cfg.val_ways, cfg.val_shots, cfg.val_queries,
                           cfg.val_episodes, cfg.seed + 1_000_003, self.ctx.device, z)
        elapsed = round(time.perf_counter() - self.t0, 2)
        row = {"phase": phase, "step": done, "seconds": elapsed, "train_loss": loss, "train_acc": acc_train,
               "val_acc": acc, "val_ci95": ci}
        for k in cfg.val_report_shots:          # reported, never used to select
            row[f"val_acc_{k}shot"], row[f"val_ci95_{k}shot"] = validate(
                self.ctx.model, self.val, cfg.val_ways, k, cfg.val_queries, cfg.val_episodes, cfg.seed + 1_000_003,
                self.ctx.device, z)
        record["history"].append(row)
        improved = acc > self.best_acc
        if improved:
            self.best_acc = acc
            save_weights(self.ctx.out / "best.npz", self.ctx.model.state_dict())
            record["best"] = {"phase": phase, "step": done, "val_acc": acc, "val_ci95": ci, "seconds": elapsed,
                              "val_setting": f"{cfg.val_ways}-way {cfg.val_shots}-shot {cfg.val_queries}-query, "
                                             f"{cfg.val_episodes} episodes"}
        record["train_seconds"] = elapsed
        more = "".join(f", {cfg.val_ways}w{k}s {row[f'val_acc_{k}shot']:.2f}" for k in cfg.val_report_shots)
        self.log(f"{phase} {done}: val {cfg.val_ways}w{cfg.val_shots}s {acc:.2f} ± {ci:.2f}{more} "
                 f"(best {self.best_acc:.2f}) loss {loss if loss is not None else float('nan'):.3f} [{elapsed:.0f}s]")
        if self.hooks.on_validate is not None:
            self.hooks.on_validate(row)
        return improved


class PretrainSteps:
    """Many-class classification over all training classes (the transfer-learning recipe):
    ``cfg.pretrain_batch`` random images per step through the backbone and a linear head."""

    def __init__(self, ctx: RunContext, train: ClassImages):
        cfg, model = ctx.cfg, ctx.model
        self.ctx = ctx
        self.labels = torch.from_numpy(train.labels()).to(ctx.device)
        self.head = nn.Linear(model.embedding_dim, train.n_classes).to(ctx.device)
        self.params = [*model.backbone.parameters(), *self.head.parameters()]
        self.opt = torch.optim.Adam([*model.backbone.parameters(), *self.head.parameters()], lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, max(1, cfg.lr_halve_every), 0.5)
        self.modules: dict[str, nn.Module] = {"model": model, "pretrain_head": self.head}

    def step(self, done: int) -> tuple[float, float, int]:
        """One Adam step on one batch; returns ``(loss, accuracy %, 1)``."""
        ctx = self.ctx
        rows = torch.randint(0, len(ctx.images), (ctx.cfg.pretrain_batch,), generator=ctx.gen, device=ctx.device)
        with ctx.amp:
            logits = self.head(ctx.model.backbone(ctx.aug(ctx.images[rows])))
            loss = F.cross_entropy(logits.float(), self.labels[rows])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.params, ctx.d)
        self.opt.step()
        self.sched.step()
        return loss.item(), (logits.argmax(1) == self.labels[rows]).float().mean().item() * 100, 1


class EpisodeSteps:
    """Episodic meta-training: ``cfg.episodes_per_step`` episodes per step on each process, as a
    gradient meta-update through the rule (:meth:`gradient_step`) or Reptile (:meth:`reptile_step`)."""

    def __init__(self, ctx: RunContext, train: ClassImages):
        cfg, d = ctx.cfg, ctx.d
        self.ctx = ctx
        self.sampler: EpisodeSampler | UnlabelledTaskSampler = (
            UnlabelledTaskSampler(train.n_images, cfg.ways, cfg.shots, cfg.queries, cfg.seed)
            if cfg.unsupervised and not cfg.cluster_from
            else EpisodeSampler(train, cfg.ways, cfg.shots, cfg.queries, cfg.seed))
        self.B, self.n_support = cfg.episodes_per_step, cfg.ways * cfg.shots
        self.yq = torch.from_numpy(self.sampler.labels()[1]).to(ctx.device)                  # [ways*queries]
        self.onehot = F.one_hot(torch.arange(cfg.ways, device=ctx.device).repeat_interleave(cfg.shots),
                                cfg.ways).float()                                            # [ways*shots, ways]
        self.params = list(ctx.model.parameters())
        self.opt = torch.optim.Adam(ctx.model.parameters(), lr=cfg.lr if cfg.meta_lr is None else cfg.meta_lr)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, max(1, cfg.lr_halve_every // (self.B * d.world)), 0.5)
        self.modules: dict[str, nn.Module] = {"model": ctx.model}

    def episode_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy and query logits ``[ways*queries, ways]`` of one episode
        ``x [ways*(shots+queries), C, H, W]`` (support first)."""
        ctx, n_s = self.ctx, self.n_support
        with ctx.amp:
            z = ctx.model.backbone(ctx.aug(x))
            logits = ctx.model.method.episode_logits(z[:n_s].float(), self.onehot, z[n_s:].float())
        return F.cross_entropy(logits, self.yq), logits

    def gradient_step(self, done: int) -> tuple[float, float, int]:
        """This rank's episodes ``done + rank*B ...(+B)``, every rank together ``B*world``; one Adam
        step on the mean loss with gradients averaged over ranks."""
        ctx, B = self.ctx, self.B
        rows = torch.from_numpy(self.sampler.batch_indices(done + ctx.d.rank * B, B)).to(ctx.device)   # [B, n]
        losses, logits = zip(*(self.episode_loss(ctx.images[rows[b]]) for b in range(B)))   # BatchNorm per episode
        loss = torch.stack(losses).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.params, ctx.d)
        self.opt.step()
        self.sched.step()
        acc = torch.cat([(lg.argmax(1) == self.yq).float() for lg in logits]).mean().item() * 100
        return loss.item(), acc, B * ctx.d.world

    def reptile_step(self, done: int) -> tuple[float, float, int]:
        """Reptile (Nichol et al. 2018): move the weights toward the average task-adapted weights."""
        ctx, B, model, cfg = self.ctx, self.B, self.ctx.model, self.ctx.cfg
        theta = {k: v.detach().clone() for k, v in model.state_dict().items()}
        delta = {k: torch.zeros_like(v) for k, v in theta.items() if v.is_floating_point()}
        rows = self.sampler.batch_indices(done, B)
        losses, accs = [], []
        for b in range(B):
            model.load_state_dict(theta)
            inner = torch.optim.Adam(model.parameters(), lr=cfg.reptile_inner_lr, betas=(0.0, 0.999))
            x = ctx.images[torch.from_numpy(rows[b]).to(ctx.device)]
            for _ in range(cfg.reptile_inner_steps):
                loss, logits = self.episode_loss(x)
                inner.zero_grad(set_to_none=True)
                loss.backward()
                inner.step()
            losses.append(loss.item())
            accs.append((logits.argmax(1) == self.yq).float().mean().item() * 100)
            for k, v in model.state_dict().items():
                if k in delta:
                    delta[k] += v.detach() - theta[k]
        eps = cfg.reptile_outer_lr * (1.0 - done / max(1, cfg.max_episodes))
        model.load_state_dict({k: theta[k] + eps * delta[k] / B if k in delta else theta[k] for k in theta})
        return float(np.mean(losses)), float(np.mean(accs)), B


def pretrain_phase(run: Run, train: ClassImages) -> None:
    """``cfg.pretrain_steps`` many-class classification steps (skipped by a run resumed past them)."""
    ctx = run.ctx
    steps = PretrainSteps(ctx, train)
    start, bad = run.resume_point("pretrain", ctx.cfg.pretrain_steps, steps.modules, steps.opt, steps.sched)
    run.run_phase("pretrain", ctx.cfg.pretrain_steps, steps.step, "step", steps.modules, steps.opt, steps.sched,
                  start, bad)


def head_never_meta_trained(cfg: TrainConfig) -> bool:
    """Whether the meta phase starts from weights whose head temperature no meta phase has set:
    this run pre-trains, or it starts from a run whose best checkpoint came from pre-training or
    trained another rule (whose temperature only the backbone came with)."""
    if cfg.pretrain_steps > 0:
        return True
    if cfg.init_from and source_method(cfg.init_from) not in (None, cfg.method):
        return True
    record = Path(cfg.init_from) / "run.json" if cfg.init_from else None
    if record is not None and record.is_file():
        return (load_json(record).get("best") or {}).get("phase") == "pretrain"
    return False


def episodic_phase(run: Run, train: ClassImages) -> None:
    """``cfg.max_episodes`` meta-training episodes, gradient or Reptile meta-updates."""
    ctx = run.ctx
    steps = EpisodeSteps(ctx, train)
    start, bad = run.resume_point("meta", ctx.cfg.max_episodes, steps.modules, steps.opt, steps.sched)
    if start == 0 and head_never_meta_trained(ctx.cfg):
        rows = torch.from_numpy(steps.sampler.batch_indices(0, 4)).to(ctx.device)        # 4 training episodes
        fitted = fit_log_scale(ctx.model, [ctx.images[r] for r in rows], steps.onehot, steps.yq, to_input)
        if fitted is not None and ctx.d.main:
            ctx.record["temperature_fit"] = {"loss_before": fitted[0], "loss_after": fitted[1],
                                             "scale": float(ctx.model.method.log_scale.detach().exp())}
            run.log(f"meta: head temperature fitted on 4 training episodes: scale "
                    f"{float(ctx.model.method.log_scale.detach().exp()):.3g}, episode loss {fitted[0]:.3f} -> {fitted[1]:.3f}")
    step = steps.reptile_step if ctx.cfg.meta == "reptile" else steps.gradient_step
    run.run_phase("meta", ctx.cfg.max_episodes, step, "ep", steps.modules, steps.opt, steps.sched, start, bad)
    ctx.record["episodes"] = ctx.record["phases"]["meta"]


def finish_run(run: Run) -> None:
    """Wait for every process; rank 0 writes the final ``run.json``."""
    ctx = run.ctx
    barrier(ctx.d)
    if ctx.d.main:
        ctx.record["train_seconds"] = round(time.perf_counter() - run.t0, 2)
        if ctx.record["stopped"].startswith("running"):
            ctx.record["stopped"] = "completed all steps"
        save_json(ctx.out / "run.json", ctx.record)


def meta_train(cfg: TrainConfig, train: ClassImages, val: ClassImages, out_dir: str | Path,
               provenance: dict[str, Any] | None = None, progress: bool = True,
               log: Callable[[str], None] | None = None, resume: bool = False,
               stop_after: int | None = None, hooks: TrainHooks | None = None) -> dict[str, Any]:
    """Train ``cfg.method`` on ``train``; keep the weights best on ``val`` episodes.

    Phases: ``pretrain`` (``cfg.pretrain_steps`` batches of many-class classification over all
    training classes, the transfer-learning recipe) then ``meta`` (``cfg.max_episodes`` episodes,
    gradient or Reptile meta-updates). ``resume``: continue from ``out_dir``'s last checkpoint.
    Under ``torchrun`` each rank runs ``episodes_per_step`` episodes per step and gradients are
    averaged. ``stop_after``: stop at the first checkpoint at or after this step (tests use it to
    interrupt a run). ``hooks``: callbacks after each step and validation. Returns the run record
    (also ``out_dir/run.json``).
    """
    if cfg.cluster_from and cfg.unsupervised:         # the unlabelled pool regrouped into pseudo-classes
        train = cluster_pool(train, cfg.cluster_from, cfg.clusters, cfg.seed)
    if train.pixels.shape[1] != cfg.channels:          # the channel count follows the data
        cfg = dataclasses.replace(cfg, channels=int(train.pixels.shape[1]))
    ctx = setup_run(cfg, train, out_dir, provenance, resume)
    run = Run(ctx, val, progress, log or (lambda s: print(s, file=sys.stderr)), stop_after, hooks or TrainHooks())
    ctx.model.train()
    if cfg.pretrain_steps > 0 and ctx.position["phase"] != "meta":
        pretrain_phase(run, train)
        ctx.position = {"phase": "pretrain-done"}
    if cfg.max_episodes > 0 and not run.interrupted:
        episodic_phase(run, train)
    finish_run(run)
    return ctx.record
