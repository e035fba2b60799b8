"""The CLI's regression paths: ``adapt``/``predict``/``forget`` with a regression bundle and CSV samples,
and ``eval`` of a regression bundle (MSE on new sinusoid tasks). Output is JSON, one object per line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgemeta.contract.bundle import read_bundle
from edgemeta.contract.regression_csv import read_samples
from edgemeta.errors import InputError


def is_regression_bundle(path: Path) -> bool:
    """Whether the (verified) bundle at ``path`` predicts real values (its manifest's regression section)."""
    manifest, _ = read_bundle(path)
    return "regression" in manifest


def adapt_csv(bundle: Path, csv_file: Path, state: Path, key: bytes | None, group: str | None,
              echo: Callable[[str], None]) -> None:
    """Add the CSV's samples (``features..., target(s)``) to the state, in ``group``; prints a JSON summary."""
    from edgemeta.runtime.regressor import DEFAULT_GROUP, FewShotRegressor

    reg = FewShotRegressor.load_or_new(bundle, state, key)
    d, o = reg.bundle.input_dim, reg.bundle.outputs
    rows = read_samples(csv_file, d + o)
    reg.partial_fit(rows[:, :d], rows[:, d:], groups=group or DEFAULT_GROUP)
    reg.save(state, key)
    echo(json.dumps({"state": str(state), "added": len(rows), "group": group or DEFAULT_GROUP,
                     "groups": {str(g): int(reg._stats[g][2]) for g in reg.groups_}, "samples": reg.n_samples_}))


def predict_csv(bundle: Path, csv_file: Path, state: Path, key: bytes | None, echo: Callable[[str], None]) -> None:
    """One JSON object per CSV row (``features...``): ``row``, ``prediction`` and, where the bundle gives
    one, ``std`` (a number for one output, else lists)."""
    from edgemeta.runtime.regressor import FewShotRegressor

    reg = FewShotRegressor.load(bundle, state, key)
    rows = read_samples(csv_file, reg.bundle.input_dim)
    if reg.bundle.gives_variance:
        pred, std = reg.predict(rows, return_std=True)
    else:
        pred, std = reg.predict(rows), None
    for i in range(len(rows)):
        obj: dict[str, Any] = {"row": i + 1, "prediction": np.asarray(pred[i]).tolist()}
        if std is not None:
            obj["std"] = np.asarray(std[i]).tolist()
        echo(json.dumps(obj))


def forget_group(bundle: Path, state: Path, group: str, key: bytes | None, echo: Callable[[str], None]) -> None:
    """Drop one group's samples from the state (a group name that is all digits also matches an int group)."""
    from edgemeta.runtime.regressor import FewShotRegressor

    reg = FewShotRegressor.load(bundle, state, key)
    name: Any = group
    if group not in reg.groups_ and group.lstrip("-").isdigit() and int(group) in reg.groups_:
        name = int(group)
    reg.forget(name)
    reg.save(state, key)
    echo(json.dumps({"state": str(state), "forgot": group, "groups": [str(g) for g in reg.groups_],
                     "samples": reg.n_samples_}))


def report_regression(bundle: Path, support: list[int] | None, queries: int, tasks: int, seed: int,
                      threads: int, as_json: bool) -> str:
    """``edgemeta eval`` of a regression bundle: query MSE ± 95% CI on new sinusoid tasks at each support size."""
    from edgemeta.data.sinusoid import TEST_SEED
    from edgemeta.regression_eval import evaluate_regression
    from edgemeta.runtime.regression_bundle import RegressionBundle

    b = RegressionBundle.load(bundle, threads)
    if not str(b.manifest["provenance"].get("dataset", "")).startswith("sinusoid"):
        raise InputError(f"{bundle} was not meta-trained on sinusoid tasks; eval measures regression bundles on "
                         f"the sinusoid benchmark only")
    ks = support or [5, 10, 20]
    stream = TEST_SEED + seed
    res = [evaluate_regression(b, k, queries, tasks, stream) for k in ks]
    out = {"task": "sinusoid", "bundle": str(bundle), "method": b.method, "precision": "fp32",
           "split": f"test task stream (seed {stream}; training uses seed 0.., validation 1000003)",
           "tasks": tasks, "queries": queries, "support": ks,
           "mse": {str(r["support"]): r["mse"] for r in res}, "ci95": {str(r["support"]): r["ci95"] for r in res},
           "ms_per_task": {str(r["support"]): r["ms_per_task"] for r in res}}
    if as_json:
        return json.dumps(out)
    return "\n".join(f"K={r['support']}: MSE {r['mse']:.4f} ± {r['ci95']:.4f} over {tasks} tasks, {queries} queries "
                     f"each ({b.method}, {out['split']})" for r in res)
