"""Export a meta-trained run to a bundle, after proving torch and onnxruntime agree.

Graphs (names fixed by the contract, ``docs/bundle-format.md``):
- ``backbone.onnx``: ``images [N, C, H, W]`` -> ``embeddings [N, D]`` (BatchNorm folded).
- ``adapt.onnx``: ``support_embeddings [S, D]``, ``support_labels_onehot [S, C]`` -> head parameters.
- ``classify.onnx``: ``embeddings [N, D]`` + every head parameter -> ``logits [N, C]``.
"""

from __future__ import annotations

import io
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgemeta.contract.bundle import write_bundle
from edgemeta.contract.bundle import seal_manifest
from edgemeta.contract.manifest import build_manifest
from edgemeta.data.classes import ClassImages
from edgemeta.data.episodes import EpisodeSampler
from edgemeta.errors import ExportError
from edgemeta.runtime.loaded_bundle import Bundle
from edgemeta.train.checkpoint import load_json, load_weights
from edgemeta.train.memo_bundle import MemoizedBundle
from edgemeta.train.methods.base import HeadMethod
from edgemeta.train.model import FewShotModel
from edgemeta.train.openset_calibration import calibrate_bundle
from edgemeta.train.recurrent_export import recurrent_extras
from edgemeta.train.shift_views import SHIFT_VIEWS, ShiftAveraged
from edgemeta.train.trainer import TrainConfig

OPSET = 17
EMBEDDING_TOL = 1e-4


class _AdaptGraph(nn.Module):
    def __init__(self, method: HeadMethod):
        super().__init__()
        self.method = method

    def forward(self, support_embeddings: torch.Tensor, support_labels_onehot: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = self.method.adapt(support_embeddings, support_labels_onehot)
        return tuple(params[n] for n in self.method.param_names)


class _ClassifyGraph(nn.Module):
    def __init__(self, method: HeadMethod):
        super().__init__()
        self.method = method

    def forward(self, embeddings: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return self.method.classify(embeddings, dict(zip(self.method.param_names, params)))


def _to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str],
             dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=inputs, output_names=outputs, opset_version=OPSET,
                          dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def graphs_from_model(model: FewShotModel, image_shape: tuple[int, int, int]) -> dict[str, bytes]:
    """The three ONNX graphs of an eval-mode model, as bytes keyed by file name."""
    model = model.eval().cpu()
    method = model.method
    D = model.embedding_dim
    S, C, N = 10, 5, 7
    x = torch.rand(N, *image_shape)
    s = torch.randn(S, D)
    onehot = torch.nn.functional.one_hot(torch.arange(S) % C, C).float()
    with torch.no_grad():
        params = method.adapt(s, onehot)
    pnames = list(method.param_names)
    param_axes = {n: {i: f"{n}_dim{i}" for i in range(params[n].dim())} for n in pnames}
    # class-count axes are named C so onnxruntime checks that all inputs agree
    for n in pnames:
        for i, size in enumerate(params[n].shape):
            if size == C:
                param_axes[n][i] = "C"
    return {
        "backbone.onnx": _to_onnx(model.backbone.folded(), (x,), ["images"], ["embeddings"],
                                  {"images": {0: "N"}, "embeddings": {0: "N"}}),
        "adapt.onnx": _to_onnx(_AdaptGraph(method), (s, onehot), ["support_embeddings", "support_labels_onehot"],
                               pnames, {"support_embeddings": {0: "S"}, "support_labels_onehot": {0: "S", 1: "C"},
                                        **param_axes}),
        "classify.onnx": _to_onnx(_ClassifyGraph(method), (s[:N], *[params[n] for n in pnames]),
                                  ["embeddings", *pnames], ["logits"],
                                  {"embeddings": {0: "N"}, "logits": {0: "N", 1: "C"}, **param_axes}),
    }


def _session(data: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def check_parity(model: FewShotModel, graphs: dict[str, bytes], episodes: list[tuple[np.ndarray, ...]],
                 seed: int = 0) -> dict[str, float]:
    """Compare onnxruntime with torch on random inputs and on real episodes.

    ``episodes``: ``(support_x, support_y, query_x)`` tuples. Raises :class:`ExportError` if any
    embedding differs by more than ``EMBEDDING_TOL`` (max abs) or any predicted class differs.
    """
    model = model.eval().cpu()
    bb, ad, cl = (_session(graphs[f]) for f in ("backbone.onnx", "adapt.onnx", "classify.onnx"))
    pnames = list(model.method.param_names)
    g = np.random.default_rng(seed)
    report = {"embedding_max_abs_random": 0.0, "embedding_max_abs_episodes": 0.0, "logit_max_abs": 0.0,
              "prediction_mismatches": 0, "episodes_checked": len(episodes)}

    def run(x: np.ndarray, ys: np.ndarray | None, q: np.ndarray | None, key: str) -> None:
        with torch.no_grad():
            zt = model.backbone(torch.from_numpy(x)).numpy()
        zo = bb.run(["embeddings"], {"images": x})[0]
        report[key] = max(report[key], float(np.abs(zt - zo).max()))
        if ys is None or q is None:
            return
        C = int(ys.max()) + 1
        onehot = np.eye(C, dtype=np.float32)[ys]
        s = zo[: len(ys)]
        zq = bb.run(["embeddings"], {"images": q})[0]
        with torch.no_grad():
            pt = model.method.adapt(torch.from_numpy(s), torch.from_numpy(onehot))
            lt = model.method.classify(torch.from_numpy(zq), pt).numpy()
        po = ad.run(pnames, {"support_embeddings": s, "support_labels_onehot": onehot})
        lo = cl.run(["logits"], {"embeddings": zq, **dict(zip(pnames, po))})[0]
        scale = max(1.0, float(np.abs(lt).max()))
        report["logit_max_abs"] = max(report["logit_max_abs"], float(np.abs(lt - lo).max()) / scale)
        report["prediction_mismatches"] += int((lt.argmax(1) != lo.argmax(1)).sum())

    shape = tuple(episodes[0][0].shape[1:]) if episodes else (1, 28, 28)
    for n in (1, 3, 17):
        run(g.random((n, *shape), dtype=np.float32), None, None, "embedding_max_abs_random")
    for sx, sy, qx in episodes:
        run(np.concatenate([sx, qx]), sy, qx, "embedding_max_abs_episodes")
    worst = max(report["embedding_max_abs_random"], report["embedding_max_abs_episodes"])
    if worst > EMBEDDING_TOL or report["prediction_mismatches"] or report["logit_max_abs"] > EMBEDDING_TOL:
        raise ExportError(
            f"torch/onnxruntime parity failed: embedding max abs diff {worst:.3g} (limit {EMBEDDING_TOL}), "
            f"relative logit diff {report['logit_max_abs']:.3g}, {report['prediction_mismatches']} "
            f"differing predictions over {len(episodes)} episodes; the bundle was not written")
    return report


def load_run(run_dir: str | Path, method: str | None = None) -> tuple[FewShotModel, dict[str, Any]]:
    """The best-validation model of a run directory, in eval mode on the CPU.

    ``method``: put another adaptation rule (with its default settings) on the run's backbone, e.g.
    to ship several heads over one backbone for :class:`edgemeta.runtime.HeadEnsemble`.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file() or not (run_dir / "best.npz").is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run (expected run.json and best.npz from "
                                f"`edgemeta train`)")
    record = load_json(run_dir / "run.json")
    cfg = TrainConfig.from_json(record["config"])
    weights = load_weights(run_dir / "best.npz")
    if method is None or method == cfg.method:
        model = FewShotModel(cfg.backbone, cfg.method, cfg.image_size, cfg.backbone_kwargs, cfg.method_kwargs,
                             in_channels=cfg.channels)
        model.load_state_dict(weights)
    else:
        model = FewShotModel(cfg.backbone, method, cfg.image_size, cfg.backbone_kwargs, in_channels=cfg.channels)
        model.backbone.load_state_dict({k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")})
        record = {**record, "config": {**record["config"], "method": method, "method_kwargs": {}},
                  "head_from": f"{cfg.method} run, {method} head with default settings"}
    return model.eval(), record


Progress = Callable[[str], None]


class _Phases:
    """Reports each export phase to ``progress``: its name when it starts, then what it found and
    its elapsed seconds when it ends."""

    def __init__(self, progress: Progress | None):
        self.progress = progress or (lambda message: None)
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[dict[str, str]]:
        """``with phases.phase(name) as outcome: ...; outcome["result"] = "..."``."""
        self.progress(f"export: {name}{f' ({detail})' if detail else ''} ...")
        outcome: dict[str, str] = {}
        t0 = time.perf_counter()
        yield outcome
        self.seconds[name] = time.perf_counter() - t0
        result = f": {outcome['result']}" if outcome.get("result") else ""
        self.progress(f"export: {name}{result} [{self.seconds[name]:.1f}s]")


def _in_memory(manifest: dict[str, Any], files: dict[str, bytes], precision: str,
               memos: dict[str, dict[bytes, np.ndarray]]) -> MemoizedBundle:
    """The bundle as the device runtime opens it, from memory (nothing written yet); each image is
    embedded once per precision over the whole export (``memos``: precision -> remembered embeddings)."""
    sealed = seal_manifest(manifest, files)
    return MemoizedBundle(sealed, files, "bundle being exported", precision=precision,
                          memo=memos.setdefault(precision, {}))


def _parity_episodes(val: ClassImages, settings: list[tuple[int, int]], count: int) -> list[tuple[np.ndarray, ...]]:
    """``count // 3`` (at least 1) ``(support_x, support_y, query_x)`` episodes of each setting."""
    episodes = []
    for ways, shots in settings:
        sampler = EpisodeSampler(val, ways, shots, 5, seed=17)
        for e in range(max(1, count // 3)):
            ep = sampler.episode(e)
            episodes.append((ep.support_x, ep.support_y, ep.query_x))
    return episodes


def export_bundle(run_dir: str | Path, out_dir: str | Path, val: ClassImages,
                  parity_episodes: int = 20, metric_episodes: int = 600,
                  int8_calibration: ClassImages | None = None, method: str | None = None,
                  shift_views: int = 1, progress: Progress | None = None) -> dict[str, Any]:
    """Export ``run_dir``'s best model to ``out_dir`` after parity checks on ``val`` episodes.

    ``val``: held-out validation classes (never the test classes). ``int8_calibration``: meta-training
    classes to calibrate an int8 backbone on; it is kept only if it passes the accuracy gate, and is
    the bundle's default precision only if it is also at least ``MIN_SPEEDUP`` x as fast as fp32
    here (:func:`edgemeta.train.quantize.precision_record`).
    ``shift_views`` (1, 5 or 9): bake a shift-averaged embedding into ``backbone.onnx``
    (:mod:`edgemeta.train.shift_views`). ``progress``: called with one line when each phase starts
    and ends (graphs, parity, validation, int8 calibration and gate, open-set calibration, writing).
    Every measurement runs on the bundle held in memory; ``out_dir`` is written once, at the end.
    Returns the manifest.
    """
    phases = _Phases(progress)
    with phases.phase("graphs", f"run {run_dir}") as outcome:
        model, record = load_run(run_dir, method)
        if shift_views != 1:
            model.backbone = ShiftAveraged(model.backbone, shift_views)
        cfg = TrainConfig.from_json(record["config"])
        settings = [(w, s) for w, s in ((5, 1), (5, 5), (20, 1)) if w <= val.n_classes]
        if not settings:
            raise ExportError(f"validation needs at least 5 classes, this run's validation set has {val.n_classes}")
        graphs = graphs_from_model(model, (cfg.channels, *cfg.image_size))
        extra_files, sections = recurrent_extras(model.method)     # update.onnx of a recurrent rule, parity-checked
        outcome["result"] = ", ".join(f"{name} {len(data):,d} B" for name, data in graphs.items())
    with phases.phase("parity check", "torch vs onnxruntime") as outcome:
        parity = check_parity(model, graphs, _parity_episodes(val, settings, parity_episodes))
        outcome["result"] = (f"max |Δembedding| {max(parity['embedding_max_abs_random'], parity['embedding_max_abs_episodes']):.2g}"
                             f" over {parity['episodes_checked']} episodes")

    from edgemeta.evaluation import evaluate_episodes  # device-path metrics, measured through the runtime

    manifest = build_manifest(
        method=cfg.method, image_size=cfg.image_size, embedding_dim=model.embedding_dim,
        head_outputs=model.method.param_names, head_hparams=model.method.hparams(),
        provenance={**record.get("provenance", {}), "backbone": cfg.backbone, "seed": cfg.seed,
                    "train_config": record["config"], "train_episodes": record["episodes"],
                    "train_seconds": record["train_seconds"], "train_device": record.get("device"),
                    "best": record["best"]},
        parity=parity, onnx_opset=OPSET, torch_version=torch.__version__, shift_views=SHIFT_VIEWS[shift_views],
        channels=cfg.channels)
    manifest.update(sections)
    files = {**graphs, **extra_files}
    memos: dict[str, dict[bytes, np.ndarray]] = {}
    # Validation metrics through the device runtime, on held-out validation classes.
    results = {}
    with phases.phase("validation", f"{metric_episodes} episodes each of "
                                    f"{', '.join(f'{w}w{s}s' for w, s in settings)}, fp32") as outcome:
        fp32 = _in_memory(manifest, files, "fp32", memos)
        for ways, shots in settings:
            results[(ways, shots)] = evaluate_episodes(fp32, val, ways, shots, 15, metric_episodes, seed=29)
            manifest["validation"][f"{ways}w{shots}s"] = {k: results[(ways, shots)][k]
                                                          for k in ("accuracy", "ci95", "episodes", "queries")}
        manifest["validation"]["split"] = "val (held-out meta-validation classes, never test)"
        outcome["result"] = ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in manifest["validation"].items()
                                      if isinstance(v, dict)) + f"; {fp32.images_embedded:,d} images embedded"
    if int8_calibration is not None:
        from edgemeta.train.quantize import (MIN_SPEEDUP, SPEED_BATCH, int8_gate, measure_speedup,
                                             precision_record, quantize_backbone)

        samples = min(1024, int8_calibration.n_images)
        with phases.phase("int8 calibration", f"{samples} meta-training images"):
            files["backbone.int8.onnx"] = quantize_backbone(graphs["backbone.onnx"], int8_calibration)
            manifest["graphs"]["backbone_int8"] = "backbone.int8.onnx"
        with phases.phase("int8 gate", f"{metric_episodes} validation episodes 5w1s, the fp32 ones; "
                                       f"speed at batch {SPEED_BATCH}, one thread") as outcome:
            # the same episodes (seed 29) fp32 validation just measured: paired, and fp32 is not run twice
            int8 = evaluate_episodes(_in_memory(manifest, files, "int8", memos), val, 5, 1, 15, metric_episodes,
                                     seed=29)
            gate = int8_gate(results[(5, 1)], int8)
            gate["calibration"] = f"{samples} meta-training images, min-max, QDQ, " \
                                  f"per-channel int8 weights, uint8 activations, ReLU before max-pooling"
            speed = measure_speedup(graphs["backbone.onnx"], files["backbone.int8.onnx"],
                                    val.batch(np.arange(min(SPEED_BATCH, val.n_images))))
            manifest["precision"] = precision_record(gate, speed, MIN_SPEEDUP)
            if not gate["passed"]:
                del files["backbone.int8.onnx"], manifest["graphs"]["backbone_int8"]
            outcome["result"] = (f"fp32 {gate['fp32_accuracy']:.2f} vs int8 {gate['int8_accuracy']:.2f}, "
                                 f"{'kept' if gate['passed'] else 'refused'}; int8 {speed['speedup']:.2f}x "
                                 f"fp32's speed; default {manifest['precision']['default']}")
    if val.n_classes >= 4:   # calibrated at the precision the runtime will use by default
        episodes = max(20, metric_episodes // 2)
        with phases.phase("open-set calibration", f"{episodes} episodes per shot count") as outcome:
            precision = manifest.get("precision", {}).get("default", "fp32")
            manifest["open_set"] = calibrate_bundle(_in_memory(manifest, files, precision, memos), val,
                                                    episodes=episodes)
            outcome["result"] = "AUROC " + ", ".join(f"{k}-shot {v:.3f}"
                                                     for k, v in manifest["open_set"]["auroc_by_shots"].items())
    with phases.phase("writing", str(out_dir)):
        write_bundle(Path(out_dir), manifest, files)
    return Bundle.load(out_dir).manifest
