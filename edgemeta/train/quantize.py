"""Static int8 quantisation of ``backbone.onnx`` with onnxruntime's tools, behind an accuracy and a speed gate.

Calibration uses meta-training images (never validation or test). The accuracy gate compares fp32
and int8 5-way 1-shot accuracy on the same validation episodes through the device runtime; export
refuses the int8 graph if it loses more than ``max_drop`` points. The speed gate times both
backbones side by side in one process (:func:`measure_speedup`); int8 becomes the bundle's default
only when it also runs at least ``min_speedup`` times as fast as fp32 (:func:`default_precision`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgemeta.data.classes import ClassImages
from edgemeta.errors import ExportError
from edgemeta.runtime.loaded_bundle import make_session

MAX_DROP = 0.3        # points of 5-way 1-shot validation accuracy int8 may lose
MIN_SPEEDUP = 1.2     # int8 is the default only when at least this much faster than fp32
SPEED_BATCH = 25      # images per timed backbone run
SPEED_ROUNDS = 21     # interleaved fp32/int8 pairs; the speedup is the median of their ratios


class _Reader(CalibrationDataReader):
    def __init__(self, images: np.ndarray, batch: int = 64):
        self._batches = iter([{"images": images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def relu_before_pool(backbone: bytes) -> bytes:
    """The same graph with every ``MaxPool -> Relu`` pair computed as ``Relu -> MaxPool``.

    Both are monotone, so the result is exactly equal in fp32. It matters for int8: after
    ``MaxPool -> Relu`` the quantiser gives the pool's input (the signed convolution output) and its
    output (the ReLU's, non-negative) different scales, so onnxruntime cannot pool in int8 and runs
    dequantise, an fp32 MaxPool with layout reorders, and quantise again in every block (measured on
    ``models/omniglot-conv4``: those cost more than the int8 convolutions save). ``Relu -> MaxPool``
    lets the ReLU fuse into the int8 convolution and the pool run on uint8 with one scale.
    """
    import onnx

    model = onnx.load_from_string(backbone)
    nodes = list(model.graph.node)
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in model.graph.output}
    swapped = []
    for pool in nodes:
        after = consumers.get(pool.output[0], []) if pool.op_type == "MaxPool" else []
        if len(pool.output) != 1 or len(after) != 1 or after[0].op_type != "Relu" or pool.output[0] in outputs:
            continue
        relu = after[0]
        pool_copy, relu_copy = type(pool)(), type(relu)()
        pool_copy.CopyFrom(pool)
        relu_copy.CopyFrom(relu)
        # the pool's slot (earlier in topological order) now holds the ReLU, the ReLU's slot the pool
        pool.CopyFrom(relu_copy)
        del pool.input[:]
        pool.input.append(pool_copy.input[0])
        del pool.output[:]
        pool.output.append(pool_copy.output[0])
        relu.CopyFrom(pool_copy)
        del relu.input[:]
        relu.input.append(pool_copy.output[0])
        del relu.output[:]
        relu.output.append(relu_copy.output[0])
        swapped.append(pool_copy.output[0])
    kept = [v for v in model.graph.value_info if v.name not in swapped]   # their shapes changed
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model.SerializeToString()


def quantize_backbone(backbone: bytes, calibration: ClassImages, samples: int = 1024, seed: int = 0) -> bytes:
    """int8 QDQ backbone (per-channel int8 weights, uint8 activations, min-max calibration) of
    :func:`relu_before_pool` of ``backbone`` (fp32-identical; checked on the calibration images)."""
    rows = np.random.default_rng(seed).choice(calibration.n_images, min(samples, calibration.n_images),
                                              replace=False)
    images = calibration.batch(np.sort(rows))
    reordered = relu_before_pool(backbone)
    _check_same_embeddings(backbone, reordered, images[:64])
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(reordered)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), _Reader(images),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax)
        return dst.read_bytes()


def _check_same_embeddings(a: bytes, b: bytes, images: np.ndarray) -> None:
    """Raise :class:`ExportError` unless graphs ``a`` and ``b`` embed ``images [B, C, H, W]`` alike."""
    za, zb = (make_session(g).run(["embeddings"], {"images": images})[0] for g in (a, b))
    diff = float(np.abs(za - zb).max())
    if diff > 1e-5 * max(1.0, float(np.abs(za).max())):
        raise ExportError(f"reordering ReLU before max-pooling changed the fp32 embeddings by {diff:.3g}; "
                          f"expected the same embeddings (the int8 graph was not built)")


def int8_gate(fp32: dict[str, Any], int8: dict[str, Any], max_drop: float = MAX_DROP) -> dict[str, Any]:
    """The manifest's record of the gate; ``passed`` is False when int8 loses more than ``max_drop``."""
    drop = round(fp32["accuracy"] - int8["accuracy"], 3)
    return {"setting": f"{fp32['ways']}-way {fp32['shots']}-shot {fp32['queries']}-query, {fp32['episodes']} "
                       f"validation episodes (same episodes for both)",
            "fp32_accuracy": fp32["accuracy"], "int8_accuracy": int8["accuracy"], "drop": drop,
            "max_drop": max_drop, "passed": bool(drop <= max_drop)}


def _seconds(session: Any, images: np.ndarray, runs: int = 1) -> float:
    """The fastest of ``runs`` back-to-back embeddings of ``images`` (a pre-empted run is not the graph's speed)."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(["embeddings"], {"images": images})
        best = min(best, time.perf_counter() - t0)
    return best


def measure_speedup(fp32: bytes, int8: bytes, images: np.ndarray, rounds: int = SPEED_ROUNDS,
                    warmup: int = 3, sample_seconds: float = 0.02) -> dict[str, Any]:
    """Embedding time of both backbones side by side, one thread each, on ``images [B, C, H, W]``.

    Both sessions live in this process and are timed in ``rounds`` interleaved pairs (the order
    alternates each round), so a load change on the machine hits both alike. Each timing is the
    fastest of as many back-to-back runs as fill ``sample_seconds`` (at least one). Returns ms per
    image (median over rounds) of each, and ``speedup``: the median over rounds of the paired ratio
    fp32 time / int8 time, with its quartiles (how noisy the machine was).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    sessions = {"fp32": make_session(fp32, threads=1), "int8": make_session(int8, threads=1)}
    slowest = max(_seconds(s, images, warmup) for s in sessions.values())
    runs = int(min(20, max(1, np.ceil(sample_seconds / max(slowest, 1e-6)))))
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for r in range(rounds):
        for name in (("fp32", "int8") if r % 2 == 0 else ("int8", "fp32")):
            times[name].append(_seconds(sessions[name], images, runs))
    ratios = np.array(times["fp32"]) / np.array(times["int8"])
    per_image = {k: 1000.0 * float(np.median(v)) / len(images) for k, v in times.items()}
    return {"fp32_ms_per_image": round(per_image["fp32"], 4), "int8_ms_per_image": round(per_image["int8"], 4),
            "speedup": round(float(np.median(ratios)), 3),
            "speedup_quartiles": [round(float(q), 3) for q in np.percentile(ratios, [25, 75])],
            "batch": int(len(images)), "rounds": int(rounds), "runs_per_timing": runs, "threads": 1,
            "method": "median over interleaved rounds of fp32 time / int8 time for one batch (each the fastest "
                      "of runs_per_timing back-to-back runs), one thread, both sessions in one process"}


def default_precision(accuracy_drop: float, speedup: float, max_drop: float = MAX_DROP,
                      min_speedup: float = MIN_SPEEDUP) -> str:
    """``"int8"`` when int8 loses at most ``max_drop`` points and runs at least ``min_speedup`` x
    as fast as fp32 (both figures measured by the export), else ``"fp32"``."""
    return "int8" if accuracy_drop <= max_drop and speedup >= min_speedup else "fp32"


def precision_record(gate: dict[str, Any], speed: dict[str, Any], min_speedup: float = MIN_SPEEDUP) -> dict[str, Any]:
    """The manifest's ``precision`` object from the accuracy gate (:func:`int8_gate`) and the speed
    measurement (:func:`measure_speedup`)."""
    default = default_precision(gate["drop"], speed["speedup"], gate["max_drop"], min_speedup)
    return {"default": default, "int8_accuracy_drop": gate["drop"], "int8_speedup": speed["speedup"],
            "min_speedup": min_speedup, "int8": {**gate, "speed": speed}}
