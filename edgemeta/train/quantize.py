"""Static int8 quantisation of ``backbone.onnx`` with onnxruntime's tools, behind an accuracy gate.

Calibration uses meta-training images (never validation or test). The gate compares fp32 and int8
5-way 1-shot accuracy on the same validation episodes through the device runtime; export refuses
the int8 graph if it loses more than ``max_drop`` points.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgemeta.data.classes import ClassImages

MAX_DROP = 0.3


class _Reader(CalibrationDataReader):
    def __init__(self, images: np.ndarray, batch: int = 64):
        self._batches = iter([{"images": images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_backbone(backbone: bytes, calibration: ClassImages, samples: int = 1024, seed: int = 0) -> bytes:
    """int8 QDQ backbone (per-channel int8 weights, uint8 activations, min-max calibration)."""
    rows = np.random.default_rng(seed).choice(calibration.n_images, min(samples, calibration.n_images),
                                              replace=False)
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(backbone)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), _Reader(calibration.batch(np.sort(rows))),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax)
        return dst.read_bytes()


def int8_gate(fp32: dict[str, Any], int8: dict[str, Any], max_drop: float = MAX_DROP) -> dict[str, Any]:
    """The manifest's record of the gate; ``passed`` is False when int8 loses more than ``max_drop``."""
    drop = round(fp32["accuracy"] - int8["accuracy"], 3)
    return {"setting": f"{fp32['ways']}-way {fp32['shots']}-shot {fp32['queries']}-query, {fp32['episodes']} "
                       f"validation episodes (same episodes for both)",
            "fp32_accuracy": fp32["accuracy"], "int8_accuracy": int8["accuracy"], "drop": drop,
            "max_drop": max_drop, "passed": bool(drop <= max_drop)}
