"""Online learning with a recurrent bundle (``method`` ``recurrent``): per class a fixed-size memory.

A recurrent bundle's ``update.onnx`` reads new samples into their classes' memory rows ``[H]`` (one
GRU step per sample, in the order given; with the ``gru_class_mean`` rule also the exact class mean
and count) and writes those classes' head rows. The runtime does not look inside a row. The device keeps
per class only its memory row, its head row and its sample count, never embeddings, so

- ``partial_fit`` costs time in the new samples only (the classes they belong to are updated, the
  others are not touched) and the state's size grows with classes, not samples;
- ``partial_fit(a)`` then ``partial_fit(b)`` equals ``fit(a + b)`` with the samples in that order
  (the GRU steps bit for bit; a class mean updated in parts to float32 rounding; the update is
  order-dependent; it is meta-trained on shuffled support so order matters little);
- ``forget(label)`` drops that class's row and is exact (a class's memory depends on its own
  samples only); removing one sample of a class is not possible (its contribution cannot be
  subtracted from the memory) and raises :class:`InputError`.

:class:`OnlineClassifier` is the :class:`FewShotClassifier` that ``FewShotClassifier(bundle)`` gives
for a recurrent bundle; its state file holds ``memory`` ``[C, H]`` and ``memory_shots`` ``[C]``
(``docs/state-format.md``) and no embeddings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from edgemeta.errors import BundleError, InputError, StateError
from edgemeta.runtime.classifier import RECURRENT as METHOD
from edgemeta.runtime.classifier import FewShotClassifier, Images, _Head, _py, check_labels
from edgemeta.runtime.loaded_bundle import Bundle, open_graph, run_graph

INPUTS = ["memory", "fresh", "support_embeddings", "support_labels_onehot"]


class MemoryUpdate:
    """``update.onnx``: ``memory [C, H]``, ``fresh [C]``, ``support_embeddings [S, D]``,
    ``support_labels_onehot [S, C]`` -> ``updated_memory [C, H]`` and the head rows by name."""

    def __init__(self, bundle: Bundle, graph: bytes, optimization: str = "all"):
        self.source, self.param_names, self.dim = bundle.source, bundle.param_names, bundle.embedding_dim
        self.hidden = int(bundle.manifest[METHOD]["hidden"])
        self.counts_in_memory = bundle.manifest[METHOD]["rule"] == "gru_class_mean"   # a row's last number: its count
        self.name = name = bundle.manifest[METHOD]["graph"]
        self.session = open_graph(graph, self.source, name, bundle.threads, optimization)
        got_in = [x.name for x in self.session.get_inputs()]
        got_out = [x.name for x in self.session.get_outputs()]
        if got_in != INPUTS or got_out != ["updated_memory", *self.param_names]:
            raise BundleError(f"{self.source}: {name} has inputs {got_in} and outputs {got_out}; the contract says "
                              f"{INPUTS} and {['updated_memory', *self.param_names]}")
        # smoke run: two fresh classes, three samples; then the same memory read out without samples
        rng = np.random.default_rng(0)
        support = rng.random((3, self.dim), dtype=np.float32)
        onehot = np.eye(2, dtype=np.float32)[[0, 1, 0]]
        memory, params = self.run(np.zeros((2, self.hidden), np.float32), np.ones(2, np.float32), support, onehot)
        again, readout = self.run(memory, np.zeros(2, np.float32), support[:0], onehot[:0])
        ok = memory.shape == (2, self.hidden) and np.isfinite(memory).all() and np.array_equal(again, memory)
        if not ok or any(not np.isfinite(v).all() or len(v) != 2 for v in (*params.values(), *readout.values())):
            raise BundleError(f"{self.source}: {name} answers a 2-class test update with memory {memory.shape} "
                              f"(finite: {bool(np.isfinite(memory).all())}); expected finite [2, {self.hidden}] "
                              f"that an empty update leaves as it is")

    def run(self, memory: np.ndarray, fresh: np.ndarray, support: np.ndarray,
            onehot: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One call of the graph; an onnxruntime failure becomes a :class:`BundleError`."""
        feeds = {"memory": memory.astype(np.float32, copy=False), "fresh": fresh.astype(np.float32, copy=False),
                 "support_embeddings": support.astype(np.float32, copy=False),
                 "support_labels_onehot": onehot.astype(np.float32, copy=False)}
        out = run_graph(self.session, self.source, self.name, None, feeds)
        return out[0], dict(zip(self.param_names, out[1:]))


@dataclass(frozen=True)
class ClassMemory:
    """What an online classifier holds (immutable: each change makes a new one, so a reader always
    sees one consistent version). Rows follow ``labels``, sorted like ``np.unique``."""

    labels: tuple[Any, ...]
    memory: np.ndarray                       # float32 [C, H]
    shots: np.ndarray                        # int64 [C]: samples read per class
    params: Mapping[str, np.ndarray]         # head rows: weight [C, D], bias [C]

    @classmethod
    def empty(cls, update: MemoryUpdate) -> "ClassMemory":
        return cls((), np.zeros((0, update.hidden), np.float32), np.zeros(0, np.int64),
                   MappingProxyType({n: np.zeros((0, update.dim) if n == "weight" else (0,), np.float32)
                                     for n in update.param_names}))

    def added(self, update: MemoryUpdate, support: np.ndarray, labels: list[Any]) -> "ClassMemory":
        """This memory after reading ``support [S, D]`` (row i labelled ``labels[i]``) in row order.
        Only the classes in ``labels`` go through the graph."""
        touched = sorted(set(labels))                 # all str or all int: np.unique's order
        col = {v: j for j, v in enumerate(touched)}
        row = {v: i for i, v in enumerate(self.labels)}
        fresh = np.array([v not in row for v in touched], np.float32)
        start = np.zeros((len(touched), update.hidden), np.float32)
        for j, v in enumerate(touched):
            if v in row:
                start[j] = self.memory[row[v]]
        onehot = np.zeros((len(labels), len(touched)), np.float32)
        onehot[np.arange(len(labels)), [col[v] for v in labels]] = 1.0
        memory, params = update.run(start, fresh, support, onehot)
        counts = onehot.sum(0).astype(np.int64)
        merged = {v: (self.memory[i], self.shots[i], {n: p[i] for n, p in self.params.items()})
                  for i, v in enumerate(self.labels)}
        for j, v in enumerate(touched):
            old_shots = merged[v][1] if v in merged else 0
            merged[v] = (memory[j], old_shots + counts[j], {n: p[j] for n, p in params.items()})
        return self._from_rows(merged, update)

    def without(self, label: Any, update: MemoryUpdate) -> "ClassMemory":
        """This memory without class ``label`` (its row dropped; the other rows are unchanged)."""
        return self._from_rows({v: (self.memory[i], self.shots[i], {n: p[i] for n, p in self.params.items()})
                                for i, v in enumerate(self.labels) if v != label}, update)

    @staticmethod
    def _from_rows(rows: dict[Any, tuple[np.ndarray, Any, dict[str, np.ndarray]]],
                   update: MemoryUpdate) -> "ClassMemory":
        labels = tuple(sorted(rows))
        if not labels:
            return ClassMemory.empty(update)
        return ClassMemory(labels, np.stack([rows[v][0] for v in labels]).astype(np.float32),
                           np.array([rows[v][1] for v in labels], np.int64),
                           MappingProxyType({n: np.stack([rows[v][2][n] for v in labels]).astype(np.float32)
                                             for n in update.param_names}))


class OnlineClassifier(FewShotClassifier):
    """A :class:`FewShotClassifier` for recurrent bundles: holds per-class memory, never embeddings.

    ``fit`` / ``partial_fit`` / ``fit_embeddings`` read the samples in the order given;
    ``forget(label)`` drops a class exactly; the state file stores the memory (``save`` / ``load``).
    """

    def _clear(self) -> None:
        self._update = memory_update(self.bundle)
        self._memory = ClassMemory.empty(self._update)
        self._emb = np.zeros((0, self.bundle.embedding_dim), np.float32)    # never filled: no embeddings kept
        self._lab: list[Any] = []                                           # one entry per held class
        self._head: _Head | None = None

    def _commit(self, memory: ClassMemory) -> None:
        """Hold ``memory``; a head exists once it has ``min_ways`` classes (caller holds the lock)."""
        self._memory, self._lab = memory, list(memory.labels)
        enough = len(memory.labels) >= self._min_ways()
        self._head = _Head(np.asarray(memory.labels), dict(memory.params), int(memory.shots.min())) if enough else None

    def _learn(self, emb: np.ndarray, y: np.ndarray, start: ClassMemory | None, allow_fewer: bool) -> None:
        labels = [_py(v) for v in y]
        with self._lock:
            base = self._memory if start is None else start
            self._check_classes(set(base.labels) | set(labels), allow_fewer=allow_fewer)
            self._commit(base.added(self._update, emb, labels))

    def fit(self, images: Images, labels: Any, unlabeled: Any = None) -> "OnlineClassifier":
        """Learn the classes in ``labels`` from ``images`` in the order given; replaces earlier classes."""
        _no_unlabeled(unlabeled)
        emb, y = self._support(images, labels)
        self._learn(emb, y, ClassMemory.empty(self._update), allow_fewer=False)
        return self

    def partial_fit(self, images: Images, labels: Any, unlabeled: Any = None) -> "OnlineClassifier":
        """Read more samples (known or new classes) into the memory, in the order given: equals ``fit``
        on everything seen so far in that order; costs time in the new samples only."""
        _no_unlabeled(unlabeled)
        emb, y = self._support(images, labels)
        self._learn(emb, y, None, allow_fewer=True)
        return self

    def fit_embeddings(self, support: np.ndarray, labels: Any, unlabeled: Any = None) -> "OnlineClassifier":
        """``fit`` on precomputed support embeddings ``[S, D]``."""
        _no_unlabeled(unlabeled)
        support = np.asarray(support)
        if support.ndim != 2 or support.shape[1] != self.bundle.embedding_dim:
            raise InputError(f"support embeddings have shape {support.shape}; expected [S, "
                             f"{self.bundle.embedding_dim}]")
        y = check_labels(labels, len(support))
        self._learn(np.ascontiguousarray(support, dtype=np.float32), y, ClassMemory.empty(self._update),
                    allow_fewer=False)
        return self

    def forget(self, label: Any) -> "OnlineClassifier":
        """Remove class ``label`` (its memory row): exact, the other classes are unchanged."""
        with self._lock:
            if label not in self._memory.labels:
                raise InputError(f"cannot forget {label!r}: not a registered class; registered: "
                                 f"{list(self._memory.labels)}")
            self._commit(self._memory.without(label, self._update))
        return self

    def forget_sample(self, *args: Any) -> None:
        """Not possible with a recurrent memory: a sample's contribution cannot be taken out of it."""
        raise InputError("a recurrent bundle keeps one memory per class, not the samples: one sample cannot be "
                         "removed; forget(label) drops the whole class, then partial_fit its other samples again")

    def class_counts(self) -> dict[Any, int]:
        """Samples read per class."""
        m = self._memory
        return {v: int(n) for v, n in zip(m.labels, m.shots)}

    def save(self, path: str | os.PathLike, key: bytes | None = None) -> None:
        """Write the private state atomically: memory ``[C, H]``, samples per class, head, labels,
        bundle identity; no embeddings, no raw samples. ``key``: 32 bytes for AES-256-GCM."""
        from edgemeta.runtime.state import StateData, write_state   # state files only: not on the predict path

        with self._lock:
            m = self._memory
        state = StateData(self.bundle.identity, list(m.labels), np.zeros((0, self.bundle.embedding_dim), np.float32),
                          np.zeros(0, np.int64), dict(m.params), {"method": self.bundle.method, "ink": self.ink},
                          memory=m.memory, memory_shots=m.shots)
        write_state(path, state, key)

    @classmethod
    def load(cls, bundle: Bundle | str | os.PathLike, path: str | os.PathLike, key: bytes | None = None,
             **kwargs: Any) -> "OnlineClassifier":
        """Restore a classifier saved with :meth:`save`; the head is read out again from the memory."""
        from edgemeta.runtime.state import read_state

        clf = cls(bundle, **kwargs)
        st = read_state(path, key)
        if st.bundle_id != clf.bundle.identity:
            raise StateError(f"{path} was saved for another bundle ({st.bundle_id[:12]}…), not "
                             f"{clf.bundle.source} ({clf.bundle.identity[:12]}…); adapt again with this bundle")
        if st.memory is None or len(st.embeddings):
            raise StateError(f"{path} holds embeddings and no memory; a recurrent bundle's state holds memory "
                             f"[C, {clf._update.hidden}] only (saved for a bundle of another method?)")
        if st.memory.shape[1] != clf._update.hidden:
            raise StateError(f"{path}: memory has shape {list(st.memory.shape)}, expected [C, {clf._update.hidden}]")
        if clf._update.counts_in_memory:
            bad = np.flatnonzero(st.memory[:, -1] != st.memory_shots)
            if len(bad):
                j = int(bad[0])
                raise StateError(f"{path}: the memory row of class {st.labels[j]!r} counts {st.memory[j, -1]:g} samples "
                                 f"where memory_shots says {int(st.memory_shots[j])}; expected the same count (an "
                                 f"altered state file)")
        limit = clf.bundle.manifest.get("limits", {}).get("max_ways")
        if limit is not None and len(st.labels) > limit:
            raise StateError(f"{path} holds {len(st.labels)} classes; this bundle's limit is {limit}")
        if st.meta.get("method", METHOD) != clf.bundle.method:
            raise StateError(f"{path} was adapted with method {st.meta['method']!r}; this bundle's is "
                             f"{clf.bundle.method!r}")
        if "ink" in st.meta and "ink" not in kwargs:
            clf.ink = st.meta["ink"]
        u = clf._update
        memory, params = u.run(st.memory, np.zeros(len(st.labels), np.float32),
                               np.zeros((0, u.dim), np.float32), np.zeros((0, len(st.labels)), np.float32))
        rows = {v: (memory[i], st.memory_shots[i], {n: p[i] for n, p in params.items()})
                for i, v in enumerate(st.labels)}
        with clf._lock:
            clf._commit(ClassMemory._from_rows(rows, u))
        return clf


def _no_unlabeled(unlabeled: Any) -> None:
    if unlabeled is not None:
        raise InputError("unlabeled samples refine prototypes of bundles with a refine graph; a recurrent bundle "
                         "learns from labelled samples only")


def memory_update(bundle: Bundle) -> MemoryUpdate:
    """The bundle's :class:`MemoryUpdate` (``bundle.memory_update``, set when it was loaded)."""
    update = getattr(bundle, "memory_update", None)
    if update is None:
        raise BundleError(f"{bundle.source} is not a recurrent bundle (method {bundle.method!r}); expected one with "
                          f"a 'recurrent' manifest section")
    return update

