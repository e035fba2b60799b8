"""A verified bundle with its three onnxruntime sessions (numpy + onnxruntime only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from edgemeta.contract.bundle import read_bundle
from edgemeta.errors import BundleError
from edgemeta.contract.preprocess import preprocess

EMBED_CHUNK = 256          # images per backbone run
VIEWS_PER_RUN = 32         # a shift-view backbone runs views x images internally; measured: 1.0 ms/image
                           # at 4 images x 9 views vs 1.4-2.1 at 100 x 9 (activations outgrow the cache)


OPTIMIZATION_LEVELS = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                       "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                       "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
PRECISIONS = ("auto", "fp32", "int8")


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


class Bundle:
    """A bundle loaded for the device: manifest plus ``backbone`` / ``adapt`` / ``classify`` sessions.

    Load with :meth:`load`; every file is checked against the manifest's sha256 before any is used,
    and the sessions are built from the verified bytes (nothing is re-read from disk).
    """

    def __init__(self, manifest: dict[str, Any], files: dict[str, bytes], source: str, threads: int = 1,
                 precision: str = "auto", optimization: str = "all"):
        self.manifest = manifest
        self.source = source
        self.method: str = manifest["method"]
        self.param_names: list[str] = list(manifest["head"]["outputs"])
        self.embedding_dim: int = int(manifest["embedding"]["dim"])
        self.preprocess_spec: dict[str, Any] = manifest["preprocess"]
        self.input_shape: list[Any] = manifest["input"]["shape"]
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
        self.precision = "int8" if precision == "int8" or (precision == "auto" and has_int8) else "fp32"
        self.threads = int(threads)
        backbone = g["backbone_int8"] if self.precision == "int8" else g["backbone"]
        self._backbone = make_session(files[backbone], threads, optimization)
        self._adapt = make_session(files[g["adapt"]], threads, optimization)
        self._classify = make_session(files[g["classify"]], threads, optimization)
        self._check_io()

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int = 1, precision: str = "auto",
             optimization: str = "all") -> "Bundle":
        """Read, verify and open a bundle directory or ``.zip``; raises :class:`BundleError` on mismatch.

        ``precision``: ``auto`` (int8 backbone when the bundle has one, else fp32), ``fp32`` or ``int8``.
        """
        manifest, files = read_bundle(path)
        return cls(manifest, files, str(Path(path)), threads, precision, optimization)

    def _check_io(self) -> None:
        names = lambda s, kind: [x.name for x in getattr(s, f"get_{kind}")()]  # noqa: E731
        expect = [
            (names(self._backbone, "inputs"), ["images"]), (names(self._backbone, "outputs"), ["embeddings"]),
            (names(self._adapt, "inputs"), ["support_embeddings", "support_labels_onehot"]),
            (names(self._adapt, "outputs"), self.param_names),
            (names(self._classify, "inputs"), ["embeddings", *self.param_names]),
            (names(self._classify, "outputs"), ["logits"]),
        ]
        for got, want in expect:
            if got != want:
                raise BundleError(f"{self.source}: graph inputs/outputs {got} do not follow the contract {want}")
        graph_in = list(self._backbone.get_inputs()[0].shape)[1:]
        spec = self.preprocess_spec
        declared = [self.input_shape[1:], [spec.get("channels", 1), *spec["size"]]]
        for shape in declared:
            if [int(v) for v in shape] != [int(v) if isinstance(v, int) else -1 for v in graph_in]:
                raise BundleError(f"{self.source}: the manifest's input {shape} does not match backbone.onnx's "
                                  f"input {graph_in}; the manifest and graphs are from different exports")
        graph_out = self._backbone.get_outputs()[0].shape[-1]
        if isinstance(graph_out, int) and graph_out != self.embedding_dim:
            raise BundleError(f"{self.source}: embedding.dim is {self.embedding_dim} but backbone.onnx outputs "
                              f"{graph_out}-d embeddings")

    def preprocess(self, images: np.ndarray | Sequence[np.ndarray], ink: str = "high",
                   what: str = "images") -> np.ndarray:
        """Raw single-channel images -> ``float32 [N, 1, H, W]`` as the manifest says."""
        return preprocess(images, self.preprocess_spec, ink=ink, what=what)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed ``float32 [N, 1, H, W]`` -> embeddings ``float32 [N, D]`` (chunked)."""
        n = self.embed_chunk
        out = [self._backbone.run(["embeddings"], {"images": x[i:i + n]})[0] for i in range(0, len(x), n)]
        return out[0] if len(out) == 1 else np.concatenate(out)

    def adapt(self, support: np.ndarray, onehot: np.ndarray) -> dict[str, np.ndarray]:
        """Support embeddings ``[S, D]`` + one-hot labels ``[S, C]`` -> head parameters by name."""
        outs = self._adapt.run(self.param_names, {"support_embeddings": support.astype(np.float32, copy=False),
                                                  "support_labels_onehot": onehot.astype(np.float32, copy=False)})
        return dict(zip(self.param_names, outs))

    def classify(self, embeddings: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """Embeddings ``[N, D]`` + head parameters -> logits ``[N, C]``."""
        return self._classify.run(["logits"], {"embeddings": embeddings, **params})[0]

    def __repr__(self) -> str:
        return (f"Bundle({self.source!r}, method={self.method!r}, embedding_dim={self.embedding_dim}, "
                f"precision={self.precision!r})")
