"""The int8 gate: int8 is a bundle's default only where it keeps accuracy and is measurably faster,
and the quantised graph pools in int8 (ReLU moved before max-pooling, exactly equal in fp32)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgemeta.data.classes import ClassImages
from edgemeta.runtime.loaded_bundle import make_session
from edgemeta.train.export import graphs_from_model
from edgemeta.train.model import FewShotModel
from edgemeta.train.quantize import (MAX_DROP, MIN_SPEEDUP, default_precision, int8_gate, measure_speedup,
                                     precision_record, quantize_backbone, relu_before_pool)
from edgemeta.train.shift_views import ShiftAveraged


@pytest.mark.parametrize("drop, speedup, expected", [
    (0.0, 2.0, "int8"), (-0.5, 1.5, "int8"),            # accurate and faster
    (MAX_DROP, MIN_SPEEDUP, "int8"),                     # both limits are inclusive
    (0.1, 1.19, "fp32"), (0.1, 0.7, "fp32"),             # accurate but not 1.2x faster: the shift-view case
    (0.31, 3.0, "fp32"), (5.0, 0.5, "fp32"),             # faster but loses accuracy
])
def test_default_precision_needs_accuracy_and_speed(drop, speedup, expected):
    assert default_precision(drop, speedup) == expected


def test_precision_record_carries_both_figures_and_the_decision():
    fp32 = {"accuracy": 98.3, "ways": 5, "shots": 1, "queries": 15, "episodes": 600}
    gate = int8_gate(fp32, {**fp32, "accuracy": 98.2})
    slow = {"speedup": 0.75, "fp32_ms_per_image": 2.2, "int8_ms_per_image": 2.9}
    fast = {**slow, "speedup": 1.9, "int8_ms_per_image": 1.1}
    rec = precision_record(gate, slow)
    assert rec["default"] == "fp32" and gate["passed"]           # accurate int8, kept, not the default
    assert (rec["int8_accuracy_drop"], rec["int8_speedup"], rec["min_speedup"]) == (0.1, 0.75, MIN_SPEEDUP)
    assert rec["int8"]["speed"] == slow and rec["int8"]["drop"] == 0.1
    assert precision_record(gate, fast)["default"] == "int8"
    assert precision_record(int8_gate(fp32, {**fp32, "accuracy": 97.0}), fast)["default"] == "fp32"


def _shift_view_backbone() -> bytes:
    """An untrained conv4 (conv -> BN -> max-pool -> ReLU blocks) with 9 shift views, as export writes it."""
    torch.manual_seed(0)
    model = FewShotModel("conv4", "proto", backbone_kwargs={"final_pool": False})
    model.backbone = ShiftAveraged(model.backbone, 9)
    return graphs_from_model(model, (1, 28, 28))["backbone.onnx"]


def _images(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 1, 28, 28)) < 0.2).astype(np.float32)


def test_relu_before_pool_is_exact_and_reorders_every_block():
    fp32 = _shift_view_backbone()
    reordered = relu_before_pool(fp32)
    ops = [n.op_type for n in onnx.load_from_string(reordered).graph.node if n.op_type in ("Conv", "MaxPool", "Relu")]
    before = [n.op_type for n in onnx.load_from_string(fp32).graph.node if n.op_type in ("Conv", "MaxPool", "Relu")]
    assert before[:3] == ["Conv", "MaxPool", "Relu"]
    assert ops == ["Conv", "Relu", "MaxPool"] * 3 + ["Conv", "Relu"]
    x = _images(7)
    a, b = (make_session(g).run(["embeddings"], {"images": x})[0] for g in (fp32, reordered))
    assert np.array_equal(a, b)


def test_int8_graph_pools_on_one_scale():
    """Each MaxPool sits between a DequantizeLinear and a QuantizeLinear of the same scale and zero
    point, which onnxruntime runs as an int8 pool; with different scales (pool before ReLU) it ran
    dequantise, an fp32 pool with layout reorders and quantise in every block, slower than fp32."""
    calibration = ClassImages.from_grouped(_images(40, seed=1).reshape(4, 10, 1, 28, 28), list("abcd"))
    int8 = onnx.load_from_string(quantize_backbone(_shift_view_backbone(), calibration, samples=40))
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in int8.graph.initializer}
    producer = {o: n for n in int8.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in int8.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pools = [n for n in int8.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 3
    for pool in pools:
        dq, (q,) = producer[pool.input[0]], consumers[pool.output[0]]
        assert (dq.op_type, q.op_type) == ("DequantizeLinear", "QuantizeLinear")
        assert consts[dq.input[1]] == consts[q.input[1]] and consts[dq.input[2]] == consts[q.input[2]]


def test_measure_speedup_times_both_graphs_side_by_side():
    fp32 = _shift_view_backbone()
    calibration = ClassImages.from_grouped(_images(40, seed=1).reshape(4, 10, 1, 28, 28), list("abcd"))
    int8 = quantize_backbone(fp32, calibration, samples=40)
    speed = measure_speedup(fp32, int8, _images(5), rounds=3, warmup=1)
    assert (speed["batch"], speed["rounds"], speed["threads"]) == (5, 3, 1)
    assert speed["fp32_ms_per_image"] > 0 and speed["int8_ms_per_image"] > 0
    lo, hi = speed["speedup_quartiles"]
    assert 0 < lo <= speed["speedup"] <= hi
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        measure_speedup(fp32, int8, _images(2), rounds=0)


def test_auto_loads_the_manifests_default_precision():
    """``auto`` follows ``precision.default``; without one (older manifests) int8 when present."""
    from pathlib import Path

    from edgemeta.contract.bundle import read_bundle
    from edgemeta.runtime.loaded_bundle import Bundle

    path = Path(__file__).resolve().parents[1] / "models" / "omniglot-conv4-proto"
    if not (path / "manifest.json").is_file():  # pragma: no cover - shipped with the checkout
        pytest.skip(f"shipped bundle not found at {path}")
    manifest, files = read_bundle(path)
    precision = manifest["precision"]
    for default in ("fp32", "int8"):
        edited = {**manifest, "precision": {**precision, "default": default, "int8_speedup": 1.0}}
        assert Bundle(edited, files, "edited").precision == default
        assert Bundle(edited, files, "edited", precision="int8").precision == "int8"   # explicit wins
    assert Bundle({**manifest, "precision": {"int8": precision["int8"]}}, files, "older").precision == "int8"
    no_int8 = {k: v for k, v in files.items() if k != "backbone.int8.onnx"}
    assert Bundle(manifest, no_int8, "fp32 only").precision == "fp32"
