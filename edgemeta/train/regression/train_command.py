"""``edgemeta train --task sinusoid``: the regression branch of the train command."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgemeta.errors import InputError

TASKS = ("classification", "sinusoid")
METHODS = ("alpaca", "metasgd")
RUN_FILES = ("run.json", "best.npz", "best.json", "last.json", "last.npz", "last_optimizer.json")


def train_task(task: str, out: Path, method: str, steps: int | None, lr: float, seed: int,
               method_kwargs: dict[str, Any], resume: bool, overwrite: bool, echo: Callable[[str], None]) -> None:
    """Meta-train a regression rule on ``task`` into ``out``; ``steps``: meta-steps of 25 tasks each
    (None: the default, 30,000). Refuses an ``out`` holding a run unless ``resume`` or ``overwrite``."""
    if task not in TASKS[1:]:
        raise InputError(f"--task {task!r} is not known; expected one of {list(TASKS)}")
    if resume and overwrite:
        raise InputError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    from edgemeta.train.regression.meta_train import (  # torch from here on
        RegressionConfig,
        build_model,
        train_regression,
    )

    if resume:
        if not (out / "run.json").is_file():
            raise InputError(f"--resume: {out} has no run.json; start the run without --resume")
        best = train_regression(out, resume=True, log=echo)
    else:
        if method not in METHODS:
            raise InputError(f"--method {method!r} is not a regression rule; expected one of {list(METHODS)}")
        held = [f for f in RUN_FILES if (out / f).exists()]
        if held and not overwrite:
            raise InputError(f"{out} already holds a run ({', '.join(held)}); continue it with --resume, replace "
                             f"it with --overwrite, or choose another --out")
        for f in held:
            (out / f).unlink()
        cfg = RegressionConfig(method=method, task=task, lr=lr, seed=seed, method_kwargs=dict(method_kwargs))
        if not lr > 0:
            raise InputError(f"--lr must be a positive learning rate, got {lr}")
        try:
            build_model(cfg)
        except (TypeError, ValueError) as exc:
            raise InputError(f"--method-kwargs {json.dumps(method_kwargs)} do not fit rule {method!r} ({exc}); "
                             f"see docs/regression.md") from None
        if steps is not None:
            if steps < 1:
                raise InputError(f"--episodes must be at least 1, got {steps}")
            cfg.steps = steps
            cfg.lr_halve_every = max(1, steps // 3)
        best = train_regression(out, cfg, log=echo)
    echo("best validation MSE " + " ".join(f"{k} {v:.4f}" for k, v in best["val_mse"].items())
         + f" at step {best['step']} -> {out}")


def is_regression_run(run: Path) -> bool:
    """Whether ``run`` holds a regression run (its ``run.json`` says ``kind: regression``)."""
    try:
        return json.loads((run / "run.json").read_text()).get("kind") == "regression"
    except (OSError, ValueError, AttributeError):
        return False


def export_task(run: Path, out: Path, echo: Callable[[str], None]) -> None:
    """``edgemeta export`` of a regression run: parity gate, validation MSE, bundle written to ``out``."""
    from edgemeta.train.regression.export import export_regression

    m = export_regression(run, out)
    v = m["validation"]
    echo(f"exported {run} -> {out} ({m['method']}, format version {m.get('format_version', 3)}): validation MSE "
         + " ".join(f"K={k[1:]} {v[k]['mse']:.4f} ± {v[k]['ci95']:.4f}" for k in v if k.startswith("k"))
         + f"; parity max relative |Δ| {m['parity']['prediction_max_rel']:.2g}")
