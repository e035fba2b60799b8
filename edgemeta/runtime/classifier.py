"""``FewShotClassifier``: learn a user's classes from a few samples, scikit-learn style.

The classifier keeps the support **embeddings** (never the raw samples) of every registered class,
so classes and shots can be added (``partial_fit``) or removed (``forget``) at any time and the head
is re-adapted on everything it holds: the result equals ``fit`` on all samples seen so far. All
state changes and reads happen under one lock, so ``predict`` from several threads while another
thread calls ``partial_fit`` is safe and every answer comes from one consistent head.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgemeta.errors import InputError
from edgemeta.runtime.loaded_bundle import Bundle
from edgemeta.errors import StateError
from edgemeta.runtime.state import StateData, read_state, write_state

Images = np.ndarray | Sequence[np.ndarray]


def check_labels(labels: Any, n_images: int) -> np.ndarray:
    """Labels as a 1-D array of str or int, one per image; refuses mixed or missing labels."""
    if not isinstance(labels, np.ndarray):
        items = list(labels) if isinstance(labels, (list, tuple)) else None
        if items is not None:
            is_str = [isinstance(v, str) for v in items]
            is_int = [isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items]
            if any(is_str) and any(is_int):
                raise InputError("labels mix types; expected all ints or all strings (e.g. 'cat', 3)")
    y = np.asarray(labels)
    if y.ndim != 1:
        raise InputError(f"labels have shape {y.shape}; expected a 1-D sequence with one label per image")
    if len(y) != n_images:
        raise InputError(f"got {n_images} images but {len(y)} labels; expected one label per image")
    if y.dtype.kind not in "iuU":
        raise InputError(f"labels have dtype {y.dtype}; expected all ints or all strings (e.g. 'cat', 3)")
    return y


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _py(label: Any) -> Any:
    """numpy scalar -> plain int / str (what users get back and what the state file stores)."""
    return int(label) if isinstance(label, (int, np.integer)) else str(label)


@dataclass(frozen=True)
class _Head:
    """One consistent adapted head: labels (column order) and parameters."""

    classes: np.ndarray
    params: dict[str, np.ndarray]
    shots: int                      # fewest samples of any class


class FewShotClassifier:
    """Adapt a bundle's head to the user's labelled samples, then classify new images.

    - ``fit(images, labels)``: learn these classes (replacing earlier ones).
    - ``partial_fit(images, labels)``: add shots to known classes or new classes.
    - ``forget(label)``: remove a class and every embedding of it.
    - ``predict`` / ``predict_proba`` / ``decision_function``; ``classes_`` lists the labels in
      column order (sorted, like scikit-learn).
    - ``predict(images, reject_unknown=True)`` answers ``unknown_label`` for queries far from every
      class (threshold calibrated at export, or ``unknown_threshold``).
    - ``save(path, key=None)`` / ``FewShotClassifier.load(bundle, path, key=None)``.

    Images: raw single-channel ``[N, H, W]`` arrays or lists of 2-D arrays (bool, uint8 0..255 or
    float in [0, 1]); ``ink='low'`` for dark strokes on bright paper.
    """

    def __init__(self, bundle: Bundle | str | os.PathLike, ink: str = "high", threads: int = 1,
                 unknown_label: Any = "unknown", unknown_threshold: float | None = None, precision: str = "auto"):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, threads=threads, precision=precision)
        self.ink = ink
        self.unknown_label = unknown_label
        self.unknown_threshold = unknown_threshold
        self._lock = threading.RLock()
        self._emb = np.zeros((0, self.bundle.embedding_dim), np.float32)   # [M, D]
        self._lab: list[Any] = []                                           # [M] labels
        self._head: _Head | None = None

    # ------------------------------------------------------------------ learning
    def embed(self, images: Images, what: str = "images") -> np.ndarray:
        """Raw images -> embeddings ``[N, D]`` through the bundle's preprocessing and backbone."""
        return self.bundle.embed(self.bundle.preprocess(images, ink=self.ink, what=what))

    def _support(self, images: Images, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        if (isinstance(images, np.ndarray) and images.size == 0) or len(images) == 0:
            raise InputError("the support set is empty; expected at least one image per class")
        x = self.bundle.preprocess(images, ink=self.ink, what="support images")
        y = check_labels(labels, len(x))
        return self.bundle.embed(x), y

    def fit(self, images: Images, labels: Any) -> "FewShotClassifier":
        """Learn the classes in ``labels`` from ``images`` (``[S, H, W]``); replaces earlier classes."""
        emb, y = self._support(images, labels)
        self._check_classes(set(map(_py, y)))
        with self._lock:
            self._set(emb, [_py(v) for v in y])
        return self

    def partial_fit(self, images: Images, labels: Any) -> "FewShotClassifier":
        """Add samples of known or new classes; equals ``fit`` on everything seen so far.

        Classes may arrive one at a time: until two classes are held there is no head to predict with.
        """
        emb, y = self._support(images, labels)
        with self._lock:
            labs = self._lab + [_py(v) for v in y]
            self._check_classes(set(labs), allow_fewer=True)
            self._store(np.concatenate([self._emb, emb]), labs)
        return self

    def fit_embeddings(self, support: np.ndarray, labels: Any) -> "FewShotClassifier":
        """``fit`` on precomputed support embeddings ``[S, D]``."""
        y = check_labels(labels, len(support))
        self._check_classes(set(map(_py, y)))
        with self._lock:
            self._set(np.ascontiguousarray(support, dtype=np.float32), [_py(v) for v in y])
        return self

    def forget(self, label: Any) -> "FewShotClassifier":
        """Remove class ``label`` and every stored embedding of it (save again to erase it on disk)."""
        with self._lock:
            if label not in self._lab:
                known = sorted(set(self._lab), key=lambda v: (isinstance(v, str), v))
                raise InputError(f"cannot forget {label!r}: not a registered class; registered: {known}")
            keep = [i for i, v in enumerate(self._lab) if v != label]
            self._store(self._emb[keep], [self._lab[i] for i in keep])
        return self

    def _min_ways(self) -> int:
        return int(self.bundle.manifest.get("limits", {}).get("min_ways", 2))

    def _store(self, emb: np.ndarray, labs: list[Any]) -> None:
        """Hold these samples; adapt a head if there are enough classes, else hold none (caller locks)."""
        if len(set(labs)) >= self._min_ways():
            self._set(emb, labs)
        else:
            self._emb, self._lab, self._head = emb, labs, None

    def _check_classes(self, classes: set[Any], allow_fewer: bool = False) -> None:
        limits = self.bundle.manifest.get("limits", {})
        lo, hi = self._min_ways(), limits.get("max_ways", 10**9)
        if len(classes) < lo and not allow_fewer:
            raise InputError(f"the support set has {len(classes)} class ({sorted(classes, key=str)}); expected at "
                             f"least {lo} different labels to tell apart")
        if len(classes) > hi:
            raise InputError(f"{len(classes)} classes exceed this bundle's limit of {hi}")
        if any(isinstance(c, str) for c in classes) and any(not isinstance(c, str) for c in classes):
            raise InputError("labels mix types with the classes already registered; expected all ints or all strings")

    def _set(self, emb: np.ndarray, labs: list[Any]) -> None:
        """Re-adapt on all held embeddings (caller holds the lock)."""
        classes, inverse = np.unique(np.asarray(labs), return_inverse=True)
        onehot = np.eye(len(classes), dtype=np.float32)[inverse]
        params = self.bundle.adapt(emb, onehot)
        self._emb, self._lab = emb, labs
        self._head = _Head(classes, params, int(np.bincount(inverse).min()))

    # ------------------------------------------------------------------ inference
    @property
    def classes_(self) -> np.ndarray | None:
        h = self._head
        return None if h is None else h.classes

    @property
    def params_(self) -> dict[str, np.ndarray] | None:
        h = self._head
        return None if h is None else h.params

    def class_counts(self) -> dict[Any, int]:
        """Samples held per class."""
        with self._lock:
            labs = list(self._lab)
        return {k: labs.count(k) for k in sorted(set(labs), key=lambda v: (isinstance(v, str), v))}

    def _snapshot(self) -> _Head:
        h = self._head
        if h is None:
            held = sorted(set(self._lab), key=lambda v: (isinstance(v, str), v))
            raise InputError(f"this classifier has no classes to tell apart yet (it holds {len(held)}: {held}); "
                             f"call fit(images, labels) with at least two classes first, or add another class with "
                             f"partial_fit / `edgemeta adapt`")
        return h

    def _logits(self, images: Images) -> tuple[np.ndarray, _Head]:
        head = self._snapshot()
        emb = self.embed(images)                 # heavy work outside the lock
        return self.bundle.classify(emb, head.params), head

    def decision_function(self, images: Images) -> np.ndarray:
        """Logits ``[N, C]`` (column j = ``classes_[j]``)."""
        return self._logits(images)[0]

    def predict_proba(self, images: Images) -> np.ndarray:
        """Class probabilities ``[N, C]`` (column j = ``classes_[j]``)."""
        return softmax(self._logits(images)[0])

    def threshold_for(self, shots: int) -> float | None:
        """The open-set threshold on the max logit: ``unknown_threshold`` if set, else the manifest's
        calibration for the nearest calibrated shot count."""
        if self.unknown_threshold is not None:
            return float(self.unknown_threshold)
        cal = self.bundle.manifest.get("open_set", {}).get("threshold_by_shots")
        if not cal:
            return None
        nearest = min(cal, key=lambda k: (abs(int(k) - shots), int(k)))
        return float(cal[nearest])

    def predict(self, images: Images, reject_unknown: bool = False) -> np.ndarray:
        """The most probable label of each image ``[N]``; with ``reject_unknown``, ``unknown_label``
        where the max logit is below the open-set threshold."""
        logits, head = self._logits(images)
        pred = head.classes[logits.argmax(axis=1)]
        if not reject_unknown:
            return pred
        thr = self.threshold_for(head.shots)
        if thr is None:
            raise InputError("this bundle has no calibrated open-set threshold; pass unknown_threshold=")
        out = pred.astype(object)
        out[logits.max(axis=1) < thr] = self.unknown_label
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, key: bytes | None = None) -> None:
        """Write the private state atomically (embeddings, head, labels, bundle identity; no raw samples).

        ``key``: 32 bytes to encrypt it with AES-256-GCM (needs the ``crypto`` extra)."""
        with self._lock:
            head = self._head
            state = StateData(self.bundle.identity, [_py(v) for v in head.classes] if head else sorted(set(self._lab), key=str),
                              self._emb.copy(), np.zeros(0, np.int64), dict(head.params) if head else {},
                              {"method": self.bundle.method, "ink": self.ink})
            order = {v: i for i, v in enumerate(state.labels)}
            state.sample_class = np.array([order[v] for v in self._lab], np.int64)
        write_state(path, state, key)

    @classmethod
    def load(cls, bundle: Bundle | str | os.PathLike, path: str | os.PathLike, key: bytes | None = None,
             **kwargs: Any) -> "FewShotClassifier":
        """Restore a classifier saved with :meth:`save`; refuses a state saved for another bundle."""
        clf = cls(bundle, **kwargs)
        st = read_state(path, key)
        if st.bundle_id != clf.bundle.identity:
            raise StateError(f"{path} was saved for another bundle ({st.bundle_id[:12]}…), not "
                             f"{clf.bundle.source} ({clf.bundle.identity[:12]}…); adapt again with this bundle")
        if st.embeddings.ndim != 2 or st.embeddings.shape[1] != clf.bundle.embedding_dim:
            raise StateError(f"{path}: embeddings have shape {st.embeddings.shape}, expected [M, "
                             f"{clf.bundle.embedding_dim}]")
        limit = clf.bundle.manifest.get("limits", {}).get("max_ways")
        if limit is not None and len(st.labels) > limit:
            raise StateError(f"{path} holds {len(st.labels)} classes; this bundle's limit is {limit}")
        if st.meta.get("method", clf.bundle.method) != clf.bundle.method:
            raise StateError(f"{path} was adapted with method {st.meta['method']!r}; this bundle's is "
                             f"{clf.bundle.method!r}")
        if "ink" in st.meta and "ink" not in kwargs:
            clf.ink = st.meta["ink"]
        labs = [st.labels[i] for i in st.sample_class]
        with clf._lock:
            clf._store(st.embeddings.astype(np.float32), labs)
        return clf

    @classmethod
    def load_or_new(cls, bundle: Bundle | str | os.PathLike, path: str | os.PathLike, key: bytes | None = None,
                    **kwargs: Any) -> "FewShotClassifier":
        """:meth:`load` if ``path`` exists, else an empty classifier."""
        if os.path.exists(path):
            return cls.load(bundle, path, key, **kwargs)
        return cls(bundle, **kwargs)
