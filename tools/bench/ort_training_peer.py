"""Peer: ONNX Runtime on-device training (onnxruntime-training-cpu 1.19.2) of a linear head on the
frozen conv4 backbone, 10 steps on each 5-way 5-shot support set.

Runs in its own venv (``.venvs/ort-training``, made by ``tools/bench/setup_peer_venvs.sh``):

    P=.venvs/ort-training/bin/python
    $P tools/bench/ort_training_peer.py artifacts                  # workstation step: training graphs
    $P tools/bench/ort_training_peer.py sweep                      # pick optimizer + lr on val episodes
    $P tools/bench/ort_training_peer.py bench --variant backbone --optimizer adamw --lr 0.02   # the sweep's best
    $P tools/bench/ort_training_peer.py bench --variant head --optimizer adamw --lr 0.02

Two variants, both built with ``onnxruntime.training.artifacts.generate_artifacts`` from the shipped
bundle's ``backbone.onnx`` (BatchNorm folded, IR 8 / opset 17, which ORT 1.19 loads as it is; the
generated graphs are saved with IR <= 9) plus a ``Gemm`` head ``[C, 64]`` + ``[C]`` initialised to zero:

- ``backbone``: images -> frozen backbone -> head -> SoftmaxCrossEntropyLoss; the backbone's weights
  are ``frozen_params`` (no gradient), only the head is in ``requires_grad``. Every step runs the
  backbone forward on the 25 support images.
- ``head``: the 25 support embeddings are computed once with an onnxruntime InferenceSession of
  ``backbone.onnx`` (onnxruntime 1.19.2, 1 thread), then only the head is in the training graph.

Adapt latency = what a device does to learn a new 5-way 5-shot task: (head variant: embed the 25
support images) + 10 x (``Module(x, y)``; ``Optimizer.step()``; ``lazy_reset_grad()``). Measured on one
reused Module after warm-up, the head reset to zero before each repeat (the optimizer moments are not
resettable through the Python API, which does not change the work of a step). Building the Module and
Optimizer for a new task (load checkpoint, create sessions) is reported separately (``task_setup_ms``)
and NOT counted in adapt latency: the most favourable reading for this peer.

Accuracy: every test episode gets a fresh CheckpointState + Module + Optimizer (so no optimizer
state leaks between episodes), 10 steps on the support set, then the eval graph's ``logits`` on the
75 queries. The device-side modes import only ``onnxruntime.training.api`` (torch-free), not the
``onnxruntime.training`` package, whose ``__init__`` imports torch: the reported RSS has no torch in it.
All sessions: ``intra_op_num_threads=1``, ``inter_op_num_threads=1``, process pinned to one core.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BUNDLE, WORK, as_float, current_rss_mb, emit, load_episodes, mean_ci95, peak_rss_mb, pin_one_core, timeit  # noqa: E402

WAYS, STEPS = 5, 10
ART = WORK / "ort_artifacts"


# ------------------------------------------------------------------------- workstation: artifacts

def build_artifacts(ways: int = WAYS) -> dict:
    """Training / eval / optimizer graphs + checkpoint for each variant and optimizer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.training import artifacts

    out = {}
    base = onnx.load(str(BUNDLE / "backbone.onnx"))
    frozen = [i.name for i in base.graph.initializer]
    dim = 64
    for variant in ("backbone", "head"):
        if variant == "backbone":
            m = onnx.load(str(BUNDLE / "backbone.onnx"))
            feat = "embeddings"
        else:
            feat = "embeddings"
            graph = helper.make_graph([], "head", [helper.make_tensor_value_info(feat, TensorProto.FLOAT, ["N", dim])], [])
            m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        g = m.graph
        g.initializer.extend([numpy_helper.from_array(np.zeros((ways, dim), np.float32), "head.weight"),
                              numpy_helper.from_array(np.zeros(ways, np.float32), "head.bias")])
        g.node.append(helper.make_node("Gemm", [feat, "head.weight", "head.bias"], ["logits"], transB=1, name="head"))
        del g.output[:]
        g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", ways]))
        m.ir_version = min(m.ir_version or 9, 9)      # what onnxruntime 1.19 loads (it reads IR <= 10)
        for opt_name, opt in (("adamw", artifacts.OptimType.AdamW), ("sgd", artifacts.OptimType.SGD)):
            d = ART / f"{variant}-{opt_name}"
            d.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            artifacts.generate_artifacts(
                m, requires_grad=["head.weight", "head.bias"],
                frozen_params=frozen if variant == "backbone" else [],
                loss=artifacts.LossType.CrossEntropyLoss, optimizer=opt, artifact_directory=str(d),
                additional_output_names=["logits"])
            for f in ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx"):
                mm = onnx.load(str(d / f))
                if mm.ir_version > 9:
                    mm.ir_version = 9
                    onnx.save(mm, str(d / f))
            out[f"{variant}-{opt_name}"] = {"seconds": round(time.perf_counter() - t0, 2),
                                            "files": sorted(p.name for p in d.iterdir())}
    return out


# ------------------------------------------------------------------------------- device side

_API: tuple | None = None


def import_training_api():
    """``onnxruntime.training.api`` without running ``onnxruntime/training/__init__.py`` (which
    imports torch for ORTModule/amp); the api subpackage itself only needs numpy + onnxruntime."""
    global _API
    if _API is not None:
        return _API
    # A device has no torch: hide it, so `import onnxruntime` (whose build check tries ORTModule,
    # i.e. torch) and the api below run as they would without it.
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        raise RuntimeError(f"{name} was imported before the device-side ORT training API")
    sys.modules["torch"] = None  # type: ignore[assignment]
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    for name in [m for m in sys.modules if m.startswith("onnxruntime.training")]:
        del sys.modules[name]
    if "onnxruntime.training" not in sys.modules:
        pkg = types.ModuleType("onnxruntime.training")
        pkg.__path__ = [os.path.join(os.path.dirname(ort.__file__), "training")]  # type: ignore[attr-defined]
        sys.modules["onnxruntime.training"] = pkg
    from onnxruntime.training import api

    assert sys.modules.get("torch") is None, "torch got imported on the device side"
    _API = (ort, api)
    return _API


def session_options(ort):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


class Trainer:
    """One variant's Module + Optimizer; ``new_task()`` rebuilds them from the checkpoint."""

    def __init__(self, variant: str, optimizer: str, lr: float):
        self.ort, self.api = import_training_api()
        self.variant, self.lr = variant, lr
        self.dir = ART / f"{variant}-{optimizer}"
        if not (self.dir / "checkpoint").exists():
            raise SystemExit(f"{self.dir} missing; run: ort_training_peer.py artifacts")
        self.so = session_options(self.ort)
        t0 = time.perf_counter()
        self.embedder = None
        if variant == "head":
            self.embedder = self.ort.InferenceSession(str(BUNDLE / "backbone.onnx"), self.so,
                                                      providers=["CPUExecutionProvider"])
        self.new_task()
        self.cold_start_ms = round((time.perf_counter() - t0) * 1e3, 2)
        n = self.module.get_parameters_size(True)
        self._zero_np = np.zeros(n, np.float32)          # keep alive: the OrtValue borrows it
        self._zero = self.ort.OrtValue.ortvalue_from_numpy(self._zero_np)._ortvalue

    def new_task(self) -> float:
        """Fresh checkpoint state, Module and Optimizer (head = 0, optimizer moments = 0); returns ms."""
        t0 = time.perf_counter()
        self.state = self.api.CheckpointState.load_checkpoint(str(self.dir / "checkpoint"))
        self.module = self.api.Module(str(self.dir / "training_model.onnx"), self.state,
                                      str(self.dir / "eval_model.onnx"), "cpu", session_options=self.so)
        self.opt = self.api.Optimizer(str(self.dir / "optimizer_model.onnx"), self.module)
        self.opt.set_learning_rate(self.lr)
        return (time.perf_counter() - t0) * 1e3

    def reset_head(self) -> None:
        self.module.copy_buffer_to_parameters(self._zero, True)

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self.embedder.run(["embeddings"], {"images": x})[0]

    def adapt(self, sx: np.ndarray, ys: np.ndarray, steps: int = STEPS) -> None:
        """What the device runs for a new task: (embed) + ``steps`` training steps."""
        inp = self.embed(sx) if self.variant == "head" else sx
        self.module.train()
        for _ in range(steps):
            self.module(inp, ys)
            self.opt.step()
            self.module.lazy_reset_grad()

    def logits(self, qx: np.ndarray, yq: np.ndarray) -> np.ndarray:
        self.module.eval()
        inp = self.embed(qx) if self.variant == "head" else qx
        return self.module(inp, yq)[1]


def accuracy(tr: Trainer, eps: dict, n: int, steps: int = STEPS) -> tuple[list[float], list[float]]:
    ys = np.ascontiguousarray(eps["support_y"], dtype=np.int64)
    yq = np.ascontiguousarray(eps["query_y"], dtype=np.int64)
    accs, setup = [], []
    for e in range(n):
        setup.append(tr.new_task())
        tr.adapt(as_float(eps["support_x"][e]), ys, steps)
        pred = tr.logits(as_float(eps["query_x"][e]), yq).argmax(1)
        accs.append(float((pred == yq).mean() * 100.0))
    return accs, setup


def cmd_bench(a: argparse.Namespace) -> dict:
    pin_one_core()
    rss0 = current_rss_mb()
    tr = Trainer(a.variant, a.optimizer, a.lr)
    eps = load_episodes("test_5w5s")
    n = min(a.episodes, len(eps["support_x"]))
    sx = as_float(eps["support_x"][0])
    ys = np.ascontiguousarray(eps["support_y"], dtype=np.int64)

    def one() -> None:
        tr.reset_head()
        tr.adapt(sx, ys)

    lat = timeit(one, warmup=a.warmup, repeat=a.repeat)
    step_only = None
    if a.variant == "head":
        z = tr.embed(sx)

        def steps_only() -> None:
            tr.reset_head()
            tr.module.train()
            for _ in range(STEPS):
                tr.module(z, ys)
                tr.opt.step()
                tr.module.lazy_reset_grad()
        step_only = timeit(steps_only, warmup=a.warmup, repeat=a.repeat)
    rss_latency = peak_rss_mb()
    setup = [tr.new_task() for _ in range(10)]       # what a new task costs before its first step
    res = {
        "peer": "onnxruntime-training", "variant": a.variant, "optimizer": a.optimizer, "lr": a.lr,
        "steps": STEPS, "head_init": "zeros", "onnxruntime": tr.ort.__version__,
        "torch_imported": sys.modules.get("torch") is not None,
        "adapt_5w5s_ms": lat, "train_steps_only_ms": step_only,
        "cold_start_ms": tr.cold_start_ms,
        "task_setup_ms_median": round(float(np.median(setup)), 3),
        "rss_after_import_mb": rss0, "peak_rss_mb_latency_phase": rss_latency, "peak_rss_mb_adapt_phase": rss_latency,
    }
    if n == 0:                                      # latency-only run (report.py's later rounds)
        return res
    t0 = time.perf_counter()
    accs, _ = accuracy(tr, eps, n)
    acc, ci = mean_ci95(accs)
    res["accuracy"] = {"mean": round(acc, 3), "ci95": round(ci, 3), "episodes": n, "ways": 5, "shots": 5,
                       "queries": 15, "seed": eps["meta"]["seed"], "split": "vinyals test",
                       "seconds": round(time.perf_counter() - t0, 2), "per_episode": [round(v, 3) for v in accs]}
    return res


def cmd_sweep(a: argparse.Namespace) -> dict:
    """Optimizer x learning rate on the *validation* episodes (head variant: same maths as the
    backbone variant, the backbone being frozen)."""
    pin_one_core()
    eps = load_episodes("val_5w5s")
    n = min(a.episodes, len(eps["support_x"]))
    grid = {"adamw": [0.001, 0.003, 0.005, 0.01, 0.02, 0.03, 0.1], "sgd": [0.01, 0.02, 0.03, 0.05, 0.1]}
    rows = []
    for opt, lrs in grid.items():
        for lr in lrs:
            tr = Trainer("head", opt, lr)
            accs, _ = accuracy(tr, eps, n)
            m, ci = mean_ci95(accs)
            rows.append({"optimizer": opt, "lr": lr, "val_accuracy": round(m, 3), "ci95": round(ci, 3)})
            print(f"{opt} lr={lr}: {m:.2f} ± {ci:.2f}", file=sys.stderr)
    best = max(rows, key=lambda r: r["val_accuracy"])
    return {"peer": "onnxruntime-training", "sweep": rows, "best": best, "episodes": n,
            "split": "vinyals val", "seed": eps["meta"]["seed"], "steps": STEPS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("artifacts")
    sw = sub.add_parser("sweep")
    sw.add_argument("--episodes", type=int, default=100)
    b = sub.add_parser("bench")
    b.add_argument("--variant", choices=["backbone", "head"], required=True)
    b.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    b.add_argument("--lr", type=float, required=True)
    b.add_argument("--episodes", type=int, default=600)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--repeat", type=int, default=50)
    a = ap.parse_args(argv)
    if a.cmd == "artifacts":
        res = {"peer": "onnxruntime-training", "artifacts": build_artifacts()}
        import onnx
        import onnxruntime

        res.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    elif a.cmd == "sweep":
        res = cmd_sweep(a)
    else:
        res = cmd_bench(a)
    emit(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
