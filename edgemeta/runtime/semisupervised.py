"""Semi-supervised refinement on the device: unlabelled samples refine what a few labels taught.

A format-3 bundle with a ``refine`` section carries ``refine.onnx``: support embeddings ``[S, D]`` +
one-hot labels ``[S, C]`` + unlabelled embeddings ``[U, D]`` -> the head parameters (``prototypes
[C, D]``, masked soft k-means, ``docs/semi-supervised.md``), which ``classify.onnx`` consumes as it
consumes ``adapt.onnx``'s. Only prototype heads (method ``proto``) have one: the rule refines class
means, which linear heads (``metasgd``, ``ridge``, ``finetune``) do not have.

The classifier keeps an **unlabelled pool**: embeddings only (never the samples), at most
``refine.max_unlabeled`` of them (the most recent; older ones drop out first). This module holds the
pool's rules; :class:`~edgemeta.runtime.classifier.FewShotClassifier` calls them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgemeta.errors import BundleError, InputError, StateError
from edgemeta.runtime.loaded_bundle import FLOAT, open_graph, run_graph

if TYPE_CHECKING:                                    # pragma: no cover - types only
    from edgemeta.runtime.loaded_bundle import Bundle

REFINE_INPUTS = ["support_embeddings", "support_labels_onehot", "unlabeled_embeddings"]
SMOKE_TOL = 1e-4            # refine.onnx with no unlabelled sample must give adapt.onnx's prototypes


class Refiner:
    """``refine.onnx`` of a loaded bundle, checked at load like the other graphs."""

    def __init__(self, bundle: "Bundle", model: bytes, optimization: str = "all"):
        section = bundle.manifest["refine"]
        self.source = bundle.source
        self.graph: str = section["graph"]
        self.outputs: list[str] = list(section["outputs"])
        self.max_unlabeled: int = int(section["max_unlabeled"])
        self._session = open_graph(model, self.source, self.graph, bundle.threads, optimization)
        self._check_io()
        self._smoke_test(bundle)

    def _check_io(self) -> None:
        for args, want in ((self._session.get_inputs(), REFINE_INPUTS), (self._session.get_outputs(), self.outputs)):
            got = [a.name for a in args]
            if got != want:
                raise BundleError(f"{self.source}: {self.graph} inputs/outputs {got} do not follow the contract {want}")
            for a in args:
                if a.type != FLOAT or not isinstance(a.shape, list) or len(a.shape) != 2:
                    raise BundleError(f"{self.source}: {self.graph} has {a.name!r} of type {a.type}; the contract "
                                      f"says {FLOAT} of rank 2")

    def _smoke_test(self, bundle: "Bundle") -> None:
        """Two classes, three support rows: with no unlabelled sample the graph must answer adapt.onnx's
        prototypes; with two it must answer finite ``[2, D]`` prototypes."""
        rng = np.random.default_rng(0)
        support = rng.standard_normal((3, bundle.embedding_dim)).astype(np.float32)
        onehot = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
        plain = bundle.adapt(support, onehot)
        empty = self.refine(support, onehot, np.zeros((0, bundle.embedding_dim), np.float32))
        some = self.refine(support, onehot, support[:2] + 0.1)
        for name in self.outputs:
            for got in (empty[name], some[name]):
                if got.shape != plain[name].shape or got.dtype != np.float32 or not np.isfinite(got).all():
                    raise BundleError(f"{self.source}: {self.graph} answers a 2-class test task with {name} "
                                      f"{got.dtype} {list(got.shape)}; expected finite float32 "
                                      f"{list(plain[name].shape)}")
            gap = float(np.abs(empty[name] - plain[name]).max())
            if gap > SMOKE_TOL * (1.0 + float(np.abs(plain[name]).max())):
                raise BundleError(f"{self.source}: {self.graph} without unlabelled samples differs from adapt.onnx "
                                  f"by {gap:.3g} in {name}; expected the same head (the graphs are from different "
                                  f"exports)")

    def refine(self, support: np.ndarray, onehot: np.ndarray, unlabeled: np.ndarray) -> dict[str, np.ndarray]:
        """Support ``[S, D]`` + one-hot ``[S, C]`` + unlabelled ``[U, D]`` -> head parameters by name."""
        feeds = {"support_embeddings": support.astype(np.float32, copy=False),
                 "support_labels_onehot": onehot.astype(np.float32, copy=False),
                 "unlabeled_embeddings": unlabeled.astype(np.float32, copy=False)}
        return dict(zip(self.outputs, run_graph(self._session, self.source, self.graph, self.outputs, feeds)))


def require_refiner(bundle: "Bundle") -> Refiner:
    """The bundle's :class:`Refiner`; :class:`InputError` saying why there is none."""
    refiner = getattr(bundle, "refiner", None)
    if refiner is not None:
        return refiner
    if bundle.method != "proto":
        raise InputError(f"unlabeled samples refine prototypes; this bundle's method is {bundle.method!r}, whose "
                         f"linear head has none (use a 'proto' bundle with a refine graph)")
    raise InputError(f"{bundle.source} has no refine graph, so unlabeled samples cannot be used; add one with "
                     f"`edgemeta add-refine {bundle.source} OUT`")


def empty_pool(bundle: "Bundle") -> np.ndarray:
    """No unlabelled embedding: float32 ``[0, D]``."""
    return np.zeros((0, bundle.embedding_dim), np.float32)


def bounded(pool: np.ndarray, new: np.ndarray, limit: int) -> np.ndarray:
    """``pool`` then ``new`` (``[U, D]`` each), keeping the ``limit`` most recent rows."""
    both = np.concatenate([pool, new]) if len(pool) else new
    return np.ascontiguousarray(both[max(0, len(both) - limit):], np.float32)


def head_params(bundle: "Bundle", support: np.ndarray, onehot: np.ndarray, pool: np.ndarray) -> dict[str, np.ndarray]:
    """The head for ``support``/``onehot``: ``adapt.onnx`` with an empty pool, else ``refine.onnx``."""
    if len(pool) == 0:
        return bundle.adapt(support, onehot)
    return require_refiner(bundle).refine(support, onehot, pool)


def pool_after_forget(bundle: "Bundle", pool: np.ndarray, params: Mapping[str, np.ndarray] | None,
                      column: int) -> np.ndarray:
    """The pool without the rows the current head assigns to class ``column`` (its largest logit): a
    forgotten class takes its labelled embeddings and the unlabelled ones it claimed with it. With no
    head (one class held) every row is that class's."""
    if len(pool) == 0:
        return pool
    if params is None:
        return pool[:0]
    keep = bundle.classify(pool, dict(params)).argmax(axis=1) != column
    return np.ascontiguousarray(pool[keep])


def checked_pool(unlabeled: Any, bundle: "Bundle", source: str) -> np.ndarray:
    """A loaded state's pool: ``None`` (a state without one) or float32 ``[U, D]`` within the bundle's bound."""
    if unlabeled is None or len(unlabeled) == 0:
        return empty_pool(bundle)
    refiner = getattr(bundle, "refiner", None)
    if refiner is None:
        raise StateError(f"{source} holds {len(unlabeled)} unlabeled embeddings but {bundle.source} has no refine "
                         f"graph to use them")
    if unlabeled.shape[1:] != (bundle.embedding_dim,) or len(unlabeled) > refiner.max_unlabeled:
        raise StateError(f"{source}: unlabeled embeddings have shape {list(unlabeled.shape)}; expected at most "
                         f"[{refiner.max_unlabeled}, {bundle.embedding_dim}]")
    return np.ascontiguousarray(unlabeled, np.float32)


def checked_embeddings(unlabeled: Any, bundle: "Bundle") -> np.ndarray:
    """Precomputed unlabelled embeddings as float32 ``[U, D]`` (``[0, D]`` for None); :class:`InputError`
    naming the expected shape, or why the bundle cannot use them."""
    if unlabeled is None:
        return empty_pool(bundle)
    require_refiner(bundle)
    a = np.asarray(unlabeled)
    if a.ndim != 2 or a.shape[1] != bundle.embedding_dim or a.dtype.kind not in "fiu" or not np.isfinite(a).all():
        raise InputError(f"unlabeled embeddings have shape {list(a.shape)} and dtype {a.dtype}; expected finite "
                         f"numbers of shape [U, {bundle.embedding_dim}]")
    return np.ascontiguousarray(a, np.float32)


def unlabeled_files(folder: Path) -> list[Path]:
    """The image files of a folder of unlabelled samples (sorted, not recursive); :class:`InputError` when it
    is not a folder or holds none."""
    from edgemeta.contract.image_files import IMAGE_SUFFIXES, image_files_in

    if not folder.is_dir():
        raise InputError(f"--unlabeled {folder} is not a folder; expected a folder of image files without labels")
    found = image_files_in(folder)
    if not found:
        raise InputError(f"--unlabeled {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return found
