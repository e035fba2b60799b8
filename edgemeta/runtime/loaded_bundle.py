"""A verified bundle with its three onnxruntime sessions (numpy + onnxruntime only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from edgemeta.contract.bundle import read_bundle
from edgemeta.errors import BundleError
from edgemeta.contract.preprocess import preprocess, spec_channels
from edgemeta.contract.vector_input import INPUT_NAME, is_vector_bundle, vector_dim

EMBED_CHUNK = 256          # images per backbone run
VIEWS_PER_RUN = 32         # a shift-view backbone runs views x images internally; measured: 1.0 ms/image
                           # at 4 images x 9 views vs 1.4-2.1 at 100 x 9 (activations outgrow the cache)


OPTIMIZATION_LEVELS = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                       "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                       "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
PRECISIONS = ("auto", "fp32", "int8")
# what onnxruntime raises on a graph it cannot load or run (its own classes derive from Exception only)
ORT_ERRORS: tuple[type[Exception], ...] = (RuntimeError, UnicodeError, *(
    v for v in vars(_ort_state).values() if isinstance(v, type) and issubclass(v, Exception)))
PARAM_RANKS = {"prototypes": 2, "weight": 2, "bias": 1}     # head parameter -> rank ([C, D] or [C])
FLOAT = "tensor(float)"


def make_session(model: bytes, threads: int = 1, optimization: str = "all") -> ort.InferenceSession:
    """A CPU session; ``threads`` intra-op threads (1 gives predictable latency on a device),
    ``optimization``: onnxruntime graph optimisation level (none, basic, extended, all)."""
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization must be one of {sorted(OPTIMIZATION_LEVELS)}, got {optimization!r}")
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def open_graph(model: bytes, source: str, name: str, threads: int = 1,
               optimization: str = "all") -> ort.InferenceSession:
    """:func:`make_session` of bundle ``source``'s graph ``name``; onnxruntime's refusal becomes a
    :class:`BundleError` naming the graph (every graph of every bundle kind opens here)."""
    try:
        return make_session(model, threads, optimization)
    except ORT_ERRORS as exc:
        raise BundleError(f"{source}: onnxruntime cannot load {name} ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); expected a valid ONNX graph") from None


def run_graph(session: ort.InferenceSession, source: str, name: str, outputs: list[str] | None,
              feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``session.run(outputs, feeds)``; an onnxruntime failure becomes a :class:`BundleError` naming
    bundle ``source``'s graph ``name``."""
    try:
        return session.run(outputs, feeds)
    except ORT_ERRORS as exc:
        raise BundleError(f"{source}: {name} failed at run time ({type(exc).__name__}: "
                          f"{str(exc)[:300]})") from None


class Bundle:
    """A bundle loaded for the device: manifest plus ``backbone`` / ``adapt`` / ``classify`` sessions.

    Load with :meth:`load`; every file is checked against the manifest's sha256 before any is used,
    and the sessions are built from the verified bytes (nothing is re-read from disk).
    """

    def __init__(self, manifest: dict[str, Any], files: dict[str, bytes], source: str, threads: int = 1,
                 precision: str = "auto", optimization: str = "all"):
        if "regression" in manifest:
            raise BundleError(f"{source} is a regression bundle (it predicts real values); use "
                              f"edgemeta.runtime.regressor.FewShotRegressor, not a classifier")
        self.manifest = manifest
        self.source = source
        self.method: str = manifest["method"]
        self.param_names: list[str] = list(manifest["head"]["outputs"])
        self.embedding_dim: int = int(manifest["embedding"]["dim"])
        self.preprocess_spec: dict[str, Any] = manifest["preprocess"]
        self.channels: int = spec_channels(self.preprocess_spec)          # 1 grey, 3 RGB (format version 2)
        self.input_shape: list[Any] = manifest["input"]["shape"]
        self.vector_dim: int | None = vector_dim(manifest) if is_vector_bundle(manifest) else None
        self.identity: str = manifest["integrity"]["manifest_sha256"]
        shifts = manifest["embedding"].get("shift_views")
        views = len(shifts) if isinstance(shifts, list) else 1
        self.embed_chunk = EMBED_CHUNK if views <= 1 else max(1, VIEWS_PER_RUN // views)
        g = manifest["graphs"]
        has_int8 = g.get("backbone_int8") in files
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "int8" and not has_int8:
            raise BundleError(f"{source} has no int8 backbone; export it with `edgemeta export --int8` or use fp32")
        # auto: the manifest's precision.default (export sets it from accuracy and speed); a manifest
        # without one keeps the older rule, int8 whenever the bundle has an int8 backbone
        declared = (manifest.get("precision") or {}).get("default", "int8")
        self.precision = "int8" if precision == "int8" or (precision == "auto" and has_int8
                                                           and declared == "int8") else "fp32"
        self.threads = int(threads)
        backbone = g["backbone_int8"] if self.precision == "int8" else g["backbone"]
        self._graph_names = {"backbone": backbone, "adapt": g["adapt"], "classify": g["classify"]}
        self._backbone = self._open(files, backbone, threads, optimization)
        self._adapt = self._open(files, g["adapt"], threads, optimization)
        self._classify = self._open(files, g["classify"], threads, optimization)
        self._check_io()
        self._smoke_test()
        self.memory_update = None               # update.onnx: recurrent bundles (format 3, recurrent section)
        if "recurrent" in manifest:
            from edgemeta.runtime.recurrent_memory import MemoryUpdate    # imports this module

            self.memory_update = MemoryUpdate(self, files[manifest["recurrent"]["graph"]], optimization)
        self.refiner = None                     # refine.onnx: format-3 bundles with a refine section
        if "refine" in manifest:
            from edgemeta.runtime.semisupervised import Refiner    # imports this module

            self.refiner = Refiner(self, files[manifest["refine"]["graph"]], optimization)

    def _open(self, files: dict[str, bytes], name: str, threads: int, optimization: str) -> ort.InferenceSession:
        """An onnxruntime session of graph ``name``; onnxruntime's refusal becomes a BundleError naming it."""
        return open_graph(files[name], self.source, name, threads, optimization)

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int = 1, precision: str = "auto",
             optimization: str = "all") -> "Bundle":
        """Read, verify and open a bundle directory or ``.zip``; raises :class:`BundleError` on mismatch.

        ``precision``: ``auto`` (the manifest's ``precision.default``; int8 when a bundle without
        one has an int8 backbone), ``fp32`` or ``int8``.
        """
        manifest, files = read_bundle(path)
        return cls(manifest, files, str(Path(path)), threads, precision, optimization)

    def _check_io(self) -> None:
        """Graph input/output names, dtypes (float32) and ranks against the contract and the manifest."""
        c = self.param_names
        vectors = self.vector_dim is not None
        expect = [
            ("backbone", self._backbone.get_inputs(), [INPUT_NAME] if vectors else ["images"], [2 if vectors else 4]),
            ("backbone", self._backbone.get_outputs(), ["embeddings"], [2]),
            ("adapt", self._adapt.get_inputs(), ["support_embeddings", "support_labels_onehot"], [2, 2]),
            ("adapt", self._adapt.get_outputs(), c, [PARAM_RANKS.get(n, -1) for n in c]),
            ("classify", self._classify.get_inputs(), ["embeddings", *c], [2, *(PARAM_RANKS.get(n, -1) for n in c)]),
            ("classify", self._classify.get_outputs(), ["logits"], [2]),
        ]
        for role, args, want, ranks in expect:
            got = [x.name for x in args]
            if got != want:
                raise BundleError(f"{self.source}: graph inputs/outputs {got} do not follow the contract {want}")
            for arg, rank in zip(args, ranks):
                shape = arg.shape if isinstance(arg.shape, list) else []
                if arg.type != FLOAT or len(shape) != rank:
                    raise BundleError(f"{self.source}: {self._graph_names[role]} has {arg.name!r} of type {arg.type} "
                                      f"and rank {len(shape)}; the contract says {FLOAT} of rank {rank}")
        graph_in = list(self._backbone.get_inputs()[0].shape)[1:]
        spec = self.preprocess_spec
        declared = [[self.vector_dim]] if vectors else [self.input_shape[1:], [spec.get("channels", 1), *spec["size"]]]
        for shape in declared:
            if [int(v) for v in shape] != [int(v) if isinstance(v, int) else -1 for v in graph_in]:
                raise BundleError(f"{self.source}: the manifest's input {shape} does not match backbone.onnx's "
                                  f"input {graph_in}; the manifest and graphs are from different exports")
        graph_out = self._backbone.get_outputs()[0].shape[-1]
        if isinstance(graph_out, int) and graph_out != self.embedding_dim:
            raise BundleError(f"{self.source}: embedding.dim is {self.embedding_dim} but backbone.onnx outputs "
                              f"{graph_out}-d embeddings")

    def _smoke_test(self) -> None:
        """Run the three graphs once on a tiny synthetic task (a blank and a full image; 3 support rows of
        2 classes) and check every output's shape and finiteness, so a bundle that loads is one
        fit/predict can use. Measured: under 1 ms for conv4, about 4 ms for a 9-view backbone."""
        shape = (self.vector_dim,) if self.vector_dim is not None else tuple(int(v) for v in self.input_shape[1:])
        x = np.zeros((2, *shape), np.float32)
        x[1] = 1.0
        emb = self.embed(x)
        self._expect("backbone", "embeddings", emb, (2, self.embedding_dim))
        emb = emb[[0, 1, 0]]
        params = self.adapt(emb, np.array([[1, 0], [0, 1], [1, 0]], np.float32))
        for name, value in params.items():
            self._expect("adapt", name, value, (2, self.embedding_dim)[:PARAM_RANKS[name]])
        self._expect("classify", "logits", self.classify(emb[:1], params), (1, 2))

    def _expect(self, role: str, what: str, value: np.ndarray, shape: tuple[int, ...]) -> None:
        if not (isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == shape
                and np.isfinite(value).all()):
            got = f"{value.dtype} {list(value.shape)}" if isinstance(value, np.ndarray) else type(value).__name__
            raise BundleError(f"{self.source}: {self._graph_names[role]} answers a 2-class test task with {what} "
                              f"{got} (finite: {bool(np.isfinite(value).all()) if isinstance(value, np.ndarray) else False}); "
                              f"expected finite float32 {list(shape)}")

    def _run(self, role: str, session: ort.InferenceSession, outputs: list[str],
             feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``session.run``; an onnxruntime failure becomes a BundleError naming the graph."""
        return run_graph(session, self.source, self._graph_names[role], outputs, feeds)

    def preprocess(self, images: np.ndarray | Sequence[np.ndarray], ink: str = "auto",
                   what: str = "images") -> np.ndarray:
        """Raw images -> ``float32 [N, channels, H, W]`` as the manifest says (``ink``: grey bundles only)."""
        return preprocess(images, self.preprocess_spec, ink=ink, what=what)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed ``float32 [N, channels, H, W]`` -> embeddings ``float32 [N, D]`` (chunked)."""
        n = self.embed_chunk
        name = "images" if self.vector_dim is None else INPUT_NAME
        out = [self._run("backbone", self._backbone, ["embeddings"], {name: x[i:i + n]})[0]
               for i in range(0, len(x), n)]
        return out[0] if len(out) == 1 else np.concatenate(out)

    def adapt(self, support: np.ndarray, onehot: np.ndarray) -> dict[str, np.ndarray]:
        """Support embeddings ``[S, D]`` + one-hot labels ``[S, C]`` -> head parameters by name."""
        outs = self._run("adapt", self._adapt, self.param_names,
                         {"support_embeddings": support.astype(np.float32, copy=False),
                          "support_labels_onehot": onehot.astype(np.float32, copy=False)})
        return dict(zip(self.param_names, outs))

    def classify(self, embeddings: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """Embeddings ``[N, D]`` + head parameters -> logits ``[N, C]``."""
        return self._run("classify", self._classify, ["logits"], {"embeddings": embeddings, **params})[0]

    def __repr__(self) -> str:
        return (f"Bundle({self.source!r}, method={self.method!r}, channels={self.channels}, "
                f"embedding_dim={self.embedding_dim}, precision={self.precision!r})")
