"""Export a regression run as a bundle (format version 3: ``vector_input`` + ``regression`` sections),
after proving torch and onnxruntime agree.

Graphs: ``backbone.onnx`` ``inputs [N, D]`` -> ``embeddings [N, P]`` (normalisation inside, last
column 1); ``adapt.onnx`` ``feature_gram [P, P]`` + ``feature_targets [P, O]`` (float64 sums) -> head
parameters; ``predict.onnx`` ``embeddings`` + head -> ``predictions [N, O]`` (+ ``variances [N, O]``).

Gates (export refuses with :class:`ExportError`): the bundle's predictions through the device runtime
equal the trained torch model's (Cholesky solver for ``alpaca``) within :data:`PREDICTION_TOL` on
random inputs and on validation tasks at K = 1, 5, 20; then the validation MSE is measured through
the runtime and written to the manifest.
"""

from __future__ import annotations

import datetime as _dt
import io
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgemeta import __version__
from edgemeta.contract.bundle import write_bundle
from edgemeta.contract.manifest_schema import (
    REGRESSION_GRAPH_FILES,
    REGRESSION_UNCERTAINTY,
)
from edgemeta.data.sinusoid import VAL_SEED, sample_tasks
from edgemeta.errors import ExportError
from edgemeta.train.regression.features import VectorFeatures
from edgemeta.train.regression.meta_train import VAL_SHOTS, RegressionModel, load_run
from edgemeta.train.regression.rules import RegressionRule

OPSET = 17
PREDICTION_TOL = 1e-3          # max |torch - onnxruntime| prediction, relative to max(1, |prediction|)
PARITY_SHOTS = (1, 5, 20)


class _Backbone(nn.Module):
    def __init__(self, features: VectorFeatures):
        super().__init__()
        self.features = features

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.features(inputs)


class _Adapt(nn.Module):
    def __init__(self, rule: RegressionRule):
        super().__init__()
        self.rule = rule

    def forward(self, feature_gram: torch.Tensor, feature_targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = self.rule.adapt(feature_gram, feature_targets)
        return tuple(params[n] for n in self.rule.param_names)


class _Predict(nn.Module):
    def __init__(self, rule: RegressionRule):
        super().__init__()
        self.rule = rule

    def forward(self, embeddings: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mean, var = self.rule.predict(embeddings, dict(zip(self.rule.param_names, params)))
        return (mean,) if var is None else (mean, var)


def _to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str],
             dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=inputs, output_names=outputs, opset_version=OPSET,
                          dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def regression_graphs(model: RegressionModel) -> dict[str, bytes]:
    """The three ONNX graphs of an eval-mode model (an ``alpaca`` rule is switched to its Newton-Schulz
    solver for the graph and back afterwards), keyed by file name."""
    model = model.eval().cpu()
    rule, feats = model.rule, model.features
    solver = getattr(rule, "solver", None)
    if solver is not None:
        rule.solver = "newton-schulz"
    try:
        x = torch.randn(7, feats.in_dim)
        phi = feats(x).detach()
        gram = (phi.t() @ phi).double()
        targets = (phi.t() @ torch.randn(7, rule.outputs)).double()
        with torch.no_grad():
            params = rule.adapt(gram, targets)
        names = list(rule.param_names)
        outs = ["predictions", "variances"] if rule.gives_variance else ["predictions"]
        return {
            REGRESSION_GRAPH_FILES["backbone"]: _to_onnx(_Backbone(feats), (x,), ["inputs"], ["embeddings"],
                                                         {"inputs": {0: "N"}, "embeddings": {0: "N"}}),
            REGRESSION_GRAPH_FILES["adapt"]: _to_onnx(_Adapt(rule), (gram, targets),
                                                      ["feature_gram", "feature_targets"], names, {}),
            REGRESSION_GRAPH_FILES["predict"]: _to_onnx(
                _Predict(rule), (phi, *(params[n] for n in names)), ["embeddings", *names], outs,
                {"embeddings": {0: "N"}, **{o: {0: "N"} for o in outs}}),
        }
    finally:
        if solver is not None:
            rule.solver = solver


def regression_manifest(model: RegressionModel, provenance: dict[str, Any], parity: dict[str, Any],
                        feature_names: list[str] | None = None, target_names: list[str] | None = None) -> dict[str, Any]:
    """The manifest of a vector-input regression bundle (``format``, ``files`` and ``integrity`` are
    completed when the bundle is sealed; ``validation`` filled in by the caller)."""
    rule, feats = model.rule, model.features
    vector = {"dim": feats.in_dim, "normalization": "in_graph"}
    if feature_names:
        vector["feature_names"] = list(feature_names)
    regression = {"outputs": rule.outputs, "uncertainty": REGRESSION_UNCERTAINTY[rule.name],
                  "statistics": "feature_gram,feature_targets"}
    if target_names:
        regression["target_names"] = list(target_names)
    return {
        "method": rule.name,
        "input": {"name": "inputs", "kind": "vectors", "shape": [-1, feats.in_dim], "dtype": "float32"},
        "preprocess": {"kind": "vectors"},
        "vector_input": vector,
        "embedding": {"name": "embeddings", "dim": feats.dim},
        "head": {"method": rule.name, "outputs": list(rule.param_names), **rule.hparams()},
        "graphs": dict(REGRESSION_GRAPH_FILES),
        "regression": regression,
        "provenance": {**provenance, "code_version": __version__, "torch": torch.__version__, "onnx_opset": OPSET,
                       "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       "platform": platform.platform()},
        "parity": dict(parity),
        "validation": {},
        "integrity": {},
    }


def _parity(model: RegressionModel, bundle: Any) -> dict[str, Any]:
    """Max |torch - runtime| prediction (and variance) over random inputs and validation tasks."""
    from edgemeta.runtime.regressor import FewShotRegressor

    worst, worst_var, checked = 0.0, 0.0, 0
    rng = np.random.default_rng(12345)
    for k in PARITY_SHOTS:
        b = sample_tasks(np.random.default_rng([VAL_SEED, 77, k]), 8, k, 50)
        for t in range(8):
            xs, ys, xq = b.x_support[t], b.y_support[t], b.x_query[t]
            xq = np.concatenate([xq, rng.uniform(-6, 6, size=(10, xq.shape[1])).astype(np.float32)])
            with torch.no_grad():
                mean, var = model.episode(*(torch.from_numpy(a) for a in (xs, ys, xq)))
            reg = FewShotRegressor(bundle).fit(xs, ys)
            if var is not None:
                got, std = reg.predict(xq, return_std=True)
                ref_std = np.sqrt(var.numpy()[:, 0])
                worst_var = max(worst_var, float(np.max(np.abs(std - ref_std) / np.maximum(1.0, ref_std))))
            else:
                got = reg.predict(xq)
            ref = mean.numpy()[:, 0]
            worst = max(worst, float(np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref)))))
            checked += 1
    return {"prediction_max_rel": worst, "std_max_rel": worst_var, "tasks_checked": checked,
            "support_sizes": list(PARITY_SHOTS), "tolerance": PREDICTION_TOL}


def export_regression(run: Path, out: Path, val_tasks: int = 1000) -> dict[str, Any]:
    """Export the best weights of regression run ``run`` to bundle folder ``out``; returns the manifest."""
    from edgemeta.contract.bundle import seal_manifest
    from edgemeta.regression_eval import evaluate_regression
    from edgemeta.runtime.regression_bundle import RegressionBundle

    if not (run / "best.npz").is_file() or not (run / "best.json").is_file():
        raise ExportError(f"{run} has no best.npz/best.json: the run has not reached its first validation; "
                          f"train it further (edgemeta train --task sinusoid --out {run} --resume)")
    cfg, model, best = load_run(run)
    t0 = time.time()
    files = regression_graphs(model)
    provenance = {"dataset": f"{cfg.task} (synthetic: A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], "
                             f"x ~ U[-5, 5])",
                  "split": f"tasks by seed stream: training seed {cfg.seed}, validation {VAL_SEED}",
                  "backbone": f"mlp {cfg.hidden} relu", "train_config": dict(vars(cfg)), "train_steps": best["step"],
                  "best": best}
    seconds = _run_seconds(run)
    if seconds is not None:
        provenance["train_seconds"] = seconds
    manifest = regression_manifest(model, provenance, {}, ["x"], ["y"])
    sealed = seal_manifest(manifest, files)
    bundle = RegressionBundle(sealed, files, str(out))
    parity = _parity(model, bundle)
    if parity["prediction_max_rel"] > PREDICTION_TOL or parity["std_max_rel"] > PREDICTION_TOL:
        raise ExportError(f"parity gate failed: torch and the exported graphs differ by "
                          f"{parity['prediction_max_rel']:.3g} (predictions) / {parity['std_max_rel']:.3g} (std), "
                          f"relative; at most {PREDICTION_TOL} allowed")
    manifest["parity"] = parity
    bundle = RegressionBundle(seal_manifest(manifest, files), files, str(out))
    for k in VAL_SHOTS:
        r = evaluate_regression(bundle, k, 100, val_tasks, seed=VAL_SEED)
        manifest["validation"][f"k{k}"] = {"mse": r["mse"], "ci95": r["ci95"], "tasks": r["tasks"],
                                           "support": k, "queries": 100}
    manifest["validation"]["split"] = f"validation task stream (seed {VAL_SEED}), never the test stream"
    manifest["provenance"]["export_seconds"] = round(time.time() - t0, 1)
    write_bundle(out, manifest, files)
    return manifest


def _run_seconds(run: Path) -> float | None:
    from edgemeta.train.checkpoint import load_json

    last = run / "last.json"
    return round(float(load_json(last)["seconds"]), 1) if last.exists() else None
