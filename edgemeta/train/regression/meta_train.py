"""Meta-training of a regression rule over :class:`VectorFeatures` on sinusoid tasks.

Each step draws ``tasks`` new tasks with one support size ``K ~ U{k_min..k_max}`` and ``queries``
query points, adapts the head from the support statistics and minimises the query loss: the
Gaussian negative log-likelihood of the predictive distribution for ``alpaca`` (as ALPaCA trains),
the mean squared error for ``metasgd``. Adam; the learning rate halves every ``lr_halve_every`` steps.
Every ``val_every`` steps the query MSE at K = 5, 10, 20 on ``val_tasks`` tasks of the validation
stream (:data:`~edgemeta.data.sinusoid.VAL_SEED`, never the test stream) is measured; the weights with
the lowest sum are kept (``best.npz``). ``last.npz`` + ``last.json`` checkpoint the run so
:func:`train_regression` with ``resume=True`` continues it; step ``i`` draws its tasks from
``default_rng([seed, i])``, so a resumed run sees the same tasks as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgemeta.data.sinusoid import VAL_SEED, X_RANGE, sample_tasks
from edgemeta.train.checkpoint import load_json, load_weights, save_json, save_weights
from edgemeta.train.regression.features import VectorFeatures
from edgemeta.train.regression.rules import RegressionRule, make_rule, statistics

VAL_SHOTS = (5, 10, 20)
UNIFORM_STD = (X_RANGE[1] - X_RANGE[0]) / math.sqrt(12.0)      # std of U[-5, 5]: the input normalisation


@dataclass
class RegressionConfig:
    """Settings of one regression meta-training run (saved as ``run.json``)."""

    method: str = "alpaca"
    task: str = "sinusoid"
    hidden: list[int] = field(default_factory=lambda: [40, 40])
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 30_000
    tasks: int = 25
    k_min: int = 2
    k_max: int = 20
    queries: int = 50
    lr: float = 1e-3
    lr_halve_every: int = 10_000
    val_every: int = 1_000
    val_tasks: int = 500
    seed: int = 0


class RegressionModel(nn.Module):
    """Features plus rule: ``episode(xs, ys, xq) -> (mean, variance or None)`` for batched tasks."""

    def __init__(self, features: VectorFeatures, rule: RegressionRule):
        super().__init__()
        self.features, self.rule = features, rule

    def episode(self, xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        gram, targets = statistics(self.features(xs), ys)
        return self.rule.predict(self.features(xq), self.rule.adapt(gram, targets))


def build_model(cfg: RegressionConfig) -> RegressionModel:
    """A fresh model for ``cfg`` (inputs of the sinusoid task: 1-d, normalised by U[-5, 5]'s moments)."""
    torch.manual_seed(cfg.seed)
    features = VectorFeatures(1, cfg.hidden, mean=[0.0], std=[UNIFORM_STD])
    return RegressionModel(features, make_rule(cfg.method, features.dim, 1, **cfg.method_kwargs))


def query_loss(model: RegressionModel, mean: torch.Tensor, var: torch.Tensor | None, yq: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL per query value (``alpaca``) or mean squared error (``metasgd``)."""
    if var is None:
        return ((mean - yq) ** 2).mean()
    return 0.5 * (torch.log(var) + (mean - yq) ** 2 / var).mean()


def validation_mse(model: RegressionModel, tasks: int, seed: int = VAL_SEED, queries: int = 100) -> dict[str, float]:
    """Mean query MSE at each of :data:`VAL_SHOTS` support sizes on ``tasks`` tasks of stream ``seed``."""
    out = {}
    with torch.no_grad():
        for k in VAL_SHOTS:
            b = sample_tasks(np.random.default_rng([seed, k]), tasks, k, queries)
            mean, _ = model.episode(*(torch.from_numpy(a) for a in (b.x_support, b.y_support, b.x_query)))
            out[f"k{k}"] = float(((mean - torch.from_numpy(b.y_query)) ** 2).mean())
    return out


def train_regression(out: Path, cfg: RegressionConfig | None = None, resume: bool = False,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Meta-train into ``out`` (``run.json``, ``best.npz``, ``best.json``, ``last.npz``, ``last.json``);
    returns the best validation record. ``resume``: continue the run in ``out`` with its own settings."""
    out.mkdir(parents=True, exist_ok=True)
    torch.set_flush_denormal(True)      # float64 solves underflow into denormals, 20x slower on x86
    if resume:
        cfg = RegressionConfig(**load_json(out / "run.json")["config"])
    elif cfg is None:
        cfg = RegressionConfig()
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start, best, elapsed = 0, {"score": float("inf")}, 0.0
    if resume and (out / "last.json").exists():
        last = load_json(out / "last.json")
        weights = load_weights(out / "last.npz")
        model.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("model.")})
        opt_state = load_json(out / "last_optimizer.json")
        _load_adam(opt, opt_state, weights)
        start, best, elapsed = last["step"], last["best"], last["seconds"]
    else:
        save_json(out / "run.json", {"kind": "regression", "config": asdict(cfg)})
    t0 = time.time() - elapsed
    for step in range(start, cfg.steps):
        rng = np.random.default_rng([cfg.seed, step])
        k = int(rng.integers(cfg.k_min, cfg.k_max + 1))
        b = sample_tasks(rng, cfg.tasks, k, cfg.queries)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * 0.5 ** (step // cfg.lr_halve_every)
        mean, var = model.episode(*(torch.from_numpy(a) for a in (b.x_support, b.y_support, b.x_query)))
        loss = query_loss(model, mean, var, torch.from_numpy(b.y_query))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if (step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps:
            val = validation_mse(model, cfg.val_tasks)
            score = sum(val.values())
            log(f"step {step + 1}: loss {float(loss.detach()):.4f} val mse " +
                " ".join(f"{k} {v:.4f}" for k, v in val.items()) + f" ({time.time() - t0:.0f} s)")
            if score < best["score"]:
                best = {"score": score, "step": step + 1, "val_mse": val}
                save_weights(out / "best.npz", model.state_dict())
                save_json(out / "best.json", best)
            _checkpoint(out, model, opt, step + 1, best, time.time() - t0)
    return best


def _checkpoint(out: Path, model: RegressionModel, opt: torch.optim.Adam, step: int, best: dict[str, Any],
                seconds: float) -> None:
    """``last.npz`` (model and Adam moments) then ``last.json`` (written last: it marks a whole checkpoint)."""
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    state = opt.state_dict()
    steps = {}
    for i, s in state["state"].items():
        arrays[f"adam.{i}.exp_avg"], arrays[f"adam.{i}.exp_avg_sq"] = s["exp_avg"], s["exp_avg_sq"]
        steps[str(i)] = float(s["step"])
    save_weights(out / "last.npz", arrays)
    save_json(out / "last_optimizer.json", {"steps": steps})
    save_json(out / "last.json", {"step": step, "best": best, "seconds": seconds})


def _load_adam(opt: torch.optim.Adam, meta: dict[str, Any], arrays: dict[str, torch.Tensor]) -> None:
    state = opt.state_dict()
    for i, n in meta["steps"].items():
        state["state"][int(i)] = {"step": torch.tensor(n), "exp_avg": arrays[f"adam.{i}.exp_avg"],
                                  "exp_avg_sq": arrays[f"adam.{i}.exp_avg_sq"]}
    opt.load_state_dict(state)


def load_run(run: Path) -> tuple[RegressionConfig, RegressionModel, dict[str, Any]]:
    """A finished run's settings, its best-validation model (eval mode) and the best record."""
    meta = load_json(run / "run.json")
    if meta.get("kind") != "regression":
        raise ValueError(f"{run} is not a regression run")
    cfg = RegressionConfig(**meta["config"])
    model = build_model(cfg)
    model.load_state_dict(load_weights(run / "best.npz"))
    return cfg, model.eval(), load_json(run / "best.json")
