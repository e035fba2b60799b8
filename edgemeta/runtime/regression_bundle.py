"""A verified regression bundle with its three onnxruntime sessions (numpy + onnxruntime only).

Contract (``docs/regression.md``): ``backbone.onnx`` ``inputs [N, D]`` float32 -> ``embeddings [N, P]``
float32 whose last column is 1; ``adapt.onnx`` ``feature_gram [P, P]`` + ``feature_targets [P, O]``
float64 -> the head parameters of ``head.outputs`` (float32); ``predict.onnx`` ``embeddings`` + head ->
``predictions [N, O]`` (+ ``variances [N, O]`` when ``regression.uncertainty`` is ``predictive_variance``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgemeta.contract.bundle import read_bundle
from edgemeta.contract.vector_input import INPUT_NAME, is_vector_bundle, vector_dim
from edgemeta.errors import BundleError
from edgemeta.runtime.loaded_bundle import open_graph, run_graph

EMBED_CHUNK = 4096        # vectors per backbone run
PARAM_RANKS = {"weight": 2, "covariance": 2, "noise_variance": 1}
FLOAT, DOUBLE = "tensor(float)", "tensor(double)"


class RegressionBundle:
    """Manifest plus ``backbone`` / ``adapt`` / ``predict`` sessions of a vector-input regression bundle,
    built from the verified bytes; I/O contract and a smoke run checked at load."""

    def __init__(self, manifest: dict[str, Any], files: dict[str, bytes], source: str, threads: int = 1):
        if "regression" not in manifest or not is_vector_bundle(manifest):
            raise BundleError(f"{source} is not a vector-input regression bundle (its manifest has no regression and "
                              f"vector_input sections); use FewShotClassifier for a classifier bundle")
        self.manifest, self.source, self.threads = manifest, source, int(threads)
        self.method: str = manifest["method"]
        self.param_names: list[str] = list(manifest["head"]["outputs"])
        self.input_dim = vector_dim(manifest)
        self.embedding_dim = int(manifest["embedding"]["dim"])
        self.outputs = int(manifest["regression"]["outputs"])
        self.gives_variance = manifest["regression"]["uncertainty"] == "predictive_variance"
        self.identity: str = manifest["integrity"]["manifest_sha256"]
        g = manifest["graphs"]
        self._names = {"backbone": g["backbone"], "adapt": g["adapt"], "predict": g["predict"]}
        self._sessions = {role: open_graph(files[name], source, name, self.threads)
                          for role, name in self._names.items()}
        self._check_io()
        self._smoke_test()

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int = 1) -> RegressionBundle:
        """Read, verify and open a bundle folder or ``.zip``; raises :class:`BundleError` on any mismatch."""
        manifest, files = read_bundle(path)
        return cls(manifest, files, str(Path(path)), threads)

    def _check_io(self) -> None:
        """Names, dtypes and ranks of every graph input and output against the contract."""
        p = self.param_names
        outs = ["predictions", "variances"] if self.gives_variance else ["predictions"]
        ranks = [PARAM_RANKS.get(n, -1) for n in p]
        expect = [
            ("backbone", "inputs", self._sessions["backbone"].get_inputs(), [INPUT_NAME], [2], [FLOAT]),
            ("backbone", "outputs", self._sessions["backbone"].get_outputs(), ["embeddings"], [2], [FLOAT]),
            ("adapt", "inputs", self._sessions["adapt"].get_inputs(), ["feature_gram", "feature_targets"], [2, 2],
             [DOUBLE, DOUBLE]),
            ("adapt", "outputs", self._sessions["adapt"].get_outputs(), p, ranks, [FLOAT] * len(p)),
            ("predict", "inputs", self._sessions["predict"].get_inputs(), ["embeddings", *p], [2, *ranks],
             [FLOAT] * (len(p) + 1)),
            ("predict", "outputs", self._sessions["predict"].get_outputs(), outs, [2] * len(outs), [FLOAT] * len(outs)),
        ]
        for role, side, args, names, want_ranks, types in expect:
            got = [a.name for a in args]
            if got != names:
                raise BundleError(f"{self.source}: {self._names[role]} has {side} {got}; the contract says {names}")
            for a, rank, t in zip(args, want_ranks, types):
                shape = a.shape if isinstance(a.shape, list) else []
                if a.type != t or len(shape) != rank:
                    raise BundleError(f"{self.source}: {self._names[role]} has {a.name!r} of type {a.type} and rank "
                                      f"{len(shape)}; the contract says {t} of rank {rank}")

    def _smoke_test(self) -> None:
        """Three vectors through all graphs: embeddings [3, P] ending in 1, a finite head and predictions."""
        x = np.zeros((3, self.input_dim), np.float32)
        x[1], x[2] = 1.0, -1.0
        emb = self.embed(x)
        if emb.shape != (3, self.embedding_dim) or not np.isfinite(emb).all() or not np.all(emb[:, -1] == 1.0):
            raise BundleError(f"{self.source}: backbone.onnx answers 3 test vectors with embeddings {list(emb.shape)}; "
                              f"expected finite [3, {self.embedding_dim}] whose last column is 1")
        e64 = emb.astype(np.float64)
        params = self.adapt(e64.T @ e64, e64.T @ np.ones((3, self.outputs)))
        pred, var = self.predict(emb, params)
        if pred.shape != (3, self.outputs) or not np.isfinite(pred).all() or (
                var is not None and not (var.shape == pred.shape and np.isfinite(var).all() and (var > 0).all())):
            raise BundleError(f"{self.source}: the graphs answer a 3-sample test task with predictions "
                              f"{list(pred.shape)}; expected finite [3, {self.outputs}] (and positive variances)")

    def _run(self, role: str, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return run_graph(self._sessions[role], self.source, self._names[role], outputs, feeds)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Checked float32 ``[N, D]`` -> embeddings float32 ``[N, P]`` (``EMBED_CHUNK`` rows a run)."""
        out = [self._run("backbone", ["embeddings"], {INPUT_NAME: x[i:i + EMBED_CHUNK]})[0]
               for i in range(0, len(x), EMBED_CHUNK)]
        return out[0] if len(out) == 1 else np.concatenate(out) if out else np.zeros((0, self.embedding_dim), np.float32)

    def adapt(self, gram: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
        """float64 sums ``gram [P, P]``, ``targets [P, O]`` -> head parameters by name."""
        outs = self._run("adapt", self.param_names, {"feature_gram": np.ascontiguousarray(gram, np.float64),
                                                     "feature_targets": np.ascontiguousarray(targets, np.float64)})
        return dict(zip(self.param_names, outs))

    def predict(self, embeddings: np.ndarray, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings ``[N, P]`` + head -> ``predictions [N, O]`` and ``variances [N, O]`` (None without)."""
        outs = ["predictions", "variances"] if self.gives_variance else ["predictions"]
        res = self._run("predict", outs, {"embeddings": embeddings, **params})
        return res[0], (res[1] if self.gives_variance else None)

    def __repr__(self) -> str:
        return (f"RegressionBundle({self.source!r}, method={self.method!r}, inputs={self.input_dim}, "
                f"outputs={self.outputs}, uncertainty={self.gives_variance})")
