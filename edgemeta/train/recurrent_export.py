"""Export of the recurrent rule's extra graph, ``update.onnx``, and its manifest section.

``update.onnx``: ``memory [C, H]``, ``fresh [C]`` (1: start from the learned initial memory),
``support_embeddings [S, D]``, ``support_labels_onehot [S, C]`` -> ``updated_memory [C, H]``,
(``H``: the memory width, the manifest's ``recurrent.hidden``; the GRU state alone, or with the
``class_mean`` layout the GRU state, the class mean and the count),
``weight [C, D]``, ``bias [C]``. It is :meth:`Recurrent.update` followed by :meth:`Recurrent.head`,
traced from the same torch module that was meta-trained, and checked against it before the bundle
is written (``check_update_parity``).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgemeta.contract.manifest_schema import RECURRENT_GRAPH
from edgemeta.errors import ExportError
from edgemeta.train.methods.recurrent import Recurrent

OPSET = 17
TOLERANCE = 1e-4          # max abs difference, relative to max(1, |torch value|)


class UpdateGraph(nn.Module):
    """The traced module of ``update.onnx``."""

    def __init__(self, method: Recurrent):
        super().__init__()
        self.method = method

    def forward(self, memory: torch.Tensor, fresh: torch.Tensor, support: torch.Tensor,
                onehot: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.method
        start = fresh[:, None] * m.initial_memory(onehot) + (1.0 - fresh[:, None]) * memory
        updated = m.update(start, support, onehot)
        params = m.head(updated)
        return (updated, *(params[n] for n in m.param_names))


def update_graph(method: Recurrent) -> bytes:
    """``update.onnx`` of an eval-mode :class:`Recurrent` rule, as bytes (C, S dynamic)."""
    method = method.eval().cpu()
    C, S = 3, 7
    args = (torch.zeros(C, method.memory_width), torch.ones(C), torch.randn(S, method.dim),
            torch.nn.functional.one_hot(torch.arange(S) % C, C).float())
    names = list(method.param_names)
    axes = {"memory": {0: "C"}, "fresh": {0: "C"}, "support_embeddings": {0: "S"},
            "support_labels_onehot": {0: "S", 1: "C"}, "updated_memory": {0: "C"}, **{n: {0: "C"} for n in names}}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(UpdateGraph(method), args, buf, opset_version=OPSET, dynamo=False, do_constant_folding=True,
                          input_names=["memory", "fresh", "support_embeddings", "support_labels_onehot"],
                          output_names=["updated_memory", *names], dynamic_axes=axes)
    return buf.getvalue()


def check_update_parity(method: Recurrent, graph: bytes, seed: int = 0) -> dict[str, Any]:
    """torch vs onnxruntime on random tasks (2..20 classes, 0..40 samples, fresh and stored memory).
    Raises :class:`ExportError` above :data:`TOLERANCE`."""
    method = method.eval().cpu()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
    g = np.random.default_rng(seed)
    worst, cases = 0.0, 0
    for C, S in ((2, 0), (2, 1), (5, 5), (5, 25), (20, 40), (3, 12)):
        memory = g.standard_normal((C, method.memory_width)).astype(np.float32)
        if method.class_mean:                                            # a count is a whole number >= 0
            memory[:, -1] = g.integers(0, 6, C)
        fresh = (g.random(C) < 0.5).astype(np.float32)
        support = g.standard_normal((S, method.dim)).astype(np.float32)
        onehot = np.eye(C, dtype=np.float32)[g.integers(0, C, S)]
        with torch.no_grad():
            want = UpdateGraph(method)(*map(torch.from_numpy, (memory, fresh, support, onehot)))
        got = session.run(None, {"memory": memory, "fresh": fresh, "support_embeddings": support,
                                 "support_labels_onehot": onehot})
        for w, o in zip(want, got):
            w = w.numpy()
            worst = max(worst, float(np.abs(w - o).max(initial=0.0)) / max(1.0, float(np.abs(w).max(initial=0.0))))
        cases += 1
    if worst > TOLERANCE:
        raise ExportError(f"torch/onnxruntime parity of {RECURRENT_GRAPH} failed: relative max diff {worst:.3g} "
                          f"(limit {TOLERANCE}) over {cases} random updates; the bundle was not written")
    return {"update_max_rel": worst, "update_cases": cases}


def recurrent_extras(method: nn.Module) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The extra files and manifest sections of a recurrent rule (``update.onnx`` and ``recurrent``),
    parity-checked; empty for every other rule."""
    if not isinstance(method, Recurrent):
        return {}, {}
    graph = update_graph(method)
    parity = check_update_parity(method, graph)
    rule = "gru_class_mean" if method.class_mean else "gru_class_memory"
    section = {"graph": RECURRENT_GRAPH, "rule": rule, "hidden": method.memory_width, "gru_hidden": method.hidden,
               "outputs": list(method.param_names), "parity": parity}
    return {RECURRENT_GRAPH: graph}, {"recurrent": section}
