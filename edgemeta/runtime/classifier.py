"""``FewShotClassifier``: learn a user's classes from a few samples; a scikit-learn estimator.

The classifier keeps the support **embeddings** (never the raw samples) of every registered class,
so classes and shots can be added (``partial_fit``) or removed (``forget``) at any time and the head
is re-adapted on everything it holds: the result equals ``fit`` on all samples seen so far. All
state changes and reads happen under one lock, so ``predict`` from several threads while another
thread calls ``partial_fit`` is safe and every answer comes from one consistent head.

Images go through the bundle's preprocessing and backbone ``CHUNK`` images at a time, so ``predict``
on a million images holds one chunk of preprocessed pixels plus the ``[N, C]`` logits.

It follows scikit-learn's estimator protocol without importing scikit-learn: ``get_params`` /
``set_params`` over the constructor's arguments, ``score`` (accuracy), fitted attributes ending in
``_``, ``__sklearn_clone__`` (clones share the loaded bundle) and ``__sklearn_tags__``.
"""

from __future__ import annotations

import os
from _thread import RLock        # what threading.RLock() returns, without importing threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from edgemeta.contract.bundle import read_manifest
from edgemeta.contract.input_checks import CheckedImages, check_images
from edgemeta.contract.preprocess import check_ink, check_spec, iter_preprocess
from edgemeta.contract.vector_input import check_vectors, vector_chunks
from edgemeta.errors import BundleError, InputError, NotFittedError, StateError
from edgemeta.runtime import semisupervised as semi
from edgemeta.runtime.loaded_bundle import Bundle

Images = np.ndarray | Sequence[np.ndarray] | CheckedImages
PARAMS = ("bundle", "ink", "threads", "unknown_label", "unknown_threshold", "precision")


def check_labels(labels: Any, n_images: int) -> np.ndarray:
    """Labels as a 1-D array of str or int, one per image; refuses mixed or missing labels."""
    if not isinstance(labels, np.ndarray):
        items = list(labels) if isinstance(labels, (list, tuple)) else None
        if items is not None:
            is_str = [isinstance(v, str) for v in items]
            is_int = [isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items]
            if any(is_str) and any(is_int):
                raise InputError("labels mix types; expected all ints or all strings (e.g. 'cat', 3)")
    try:
        y = np.asarray(labels)
    except ValueError:
        raise InputError("labels are a ragged nested sequence; expected a 1-D sequence with one int or str "
                         "label per image") from None
    if y.ndim != 1:
        raise InputError(f"labels have shape {y.shape}; expected a 1-D sequence with one label per image")
    if len(y) != n_images:
        raise InputError(f"got {n_images} images but {len(y)} labels; expected one label per image")
    if y.dtype.kind not in "iuU":
        raise InputError(f"labels have dtype {y.dtype}; expected all ints or all strings (e.g. 'cat', 3)")
    return y


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits [N, K]`` -> probabilities ``[N, K]`` (max subtracted first)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


RECURRENT = "recurrent"       # the method (and manifest section) of recurrent bundles


def is_recurrent(manifest: dict[str, Any]) -> bool:
    """Whether a verified manifest is a recurrent bundle's (``method`` ``recurrent`` with its section)."""
    return manifest.get("method") == RECURRENT and RECURRENT in manifest


def _py(label: Any) -> Any:
    """numpy scalar -> plain int / str (what users get back and what the state file stores)."""
    return int(label) if isinstance(label, (int, np.integer)) else str(label)


def _manifest_of(bundle: Any) -> dict[str, Any] | None:
    """The manifest of a loaded :class:`Bundle` or of a bundle path (None when it cannot be read: the
    classifier's own load then refuses it with the reason)."""
    if isinstance(bundle, Bundle):
        return bundle.manifest
    if isinstance(bundle, (str, os.PathLike)):
        try:
            return read_manifest(bundle)
        except (BundleError, OSError):
            return None
    return None


def _stack_rows(n: int, width: int, chunks: Iterator[np.ndarray]) -> np.ndarray:
    """Chunks ``[n_i, width]`` (summing to ``n`` rows) into one preallocated float32 ``[n, width]``."""
    out = np.empty((n, width), np.float32)
    at = 0
    for z in chunks:
        out[at:at + len(z)] = z
        at += len(z)
    return out


def _is_empty(images: Any) -> bool:
    if isinstance(images, np.ndarray):
        return images.ndim > 0 and len(images) == 0
    return isinstance(images, (list, tuple)) and len(images) == 0


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
    - ``fit(images, labels, unlabeled=U)`` / ``partial_fit(..., unlabeled=U)`` / ``add_unlabeled(U)``:
      unlabelled samples refine the prototypes (bundles with a refine graph; docs/semi-supervised.md).
    - ``predict`` / ``predict_proba`` / ``decision_function`` / ``score``; ``classes_`` lists the
      labels in column order (sorted, like scikit-learn).
    - ``predict(images, reject_unknown=True)`` answers ``unknown_label`` for queries far from every
      class (threshold calibrated at export, or ``unknown_threshold``).
    - ``save(path, key=None)`` / ``FewShotClassifier.load(bundle, path, key=None)``.

    ``bundle``: a :class:`Bundle` (kept as given) or a path, loaded once here with ``threads`` and
    ``precision``; ``get_params`` returns the loaded Bundle, so clones share it.
    Images: ``[N, H, W]`` / ``[N, 1, H, W]`` grey or ``[N, H, W, 3|4]`` colour arrays, or lists of
    ``[H, W]`` / ``[H, W, 3|4]`` arrays of any sizes (bool, uint8 0..255 or float in [0, 1]); see
    docs/inputs.md. A grey bundle converts colour to grey; a colour bundle (``bundle.channels == 3``)
    takes photos of any size and aspect (centre crop, grey replicated to RGB).
    ``ink`` (grey bundles; accepted and without effect for colour ones): ``'auto'`` (default) inverts
    each image whose mean is above 0.5 (dark ink on bright paper); ``'high'`` / ``'low'`` force
    bright / dark strokes.
    """

    _estimator_type = "classifier"          # scikit-learn < 1.6 reads this; newer ones __sklearn_tags__

    def __new__(cls, bundle: Any = None, *args: Any, **kwargs: Any) -> "FewShotClassifier":
        """A recurrent bundle (``method`` ``recurrent``) gets an
        :class:`~edgemeta.runtime.recurrent_memory.OnlineClassifier`: per-class memory, no embeddings.
        Deciding reads a bundle folder's manifest only; other bundles never import the recurrent module."""
        if cls is FewShotClassifier:
            manifest = _manifest_of(bundle)
            if manifest is not None and is_recurrent(manifest):
                from edgemeta.runtime.recurrent_memory import OnlineClassifier    # imports this module

                cls = OnlineClassifier
        return super().__new__(cls)

    def __init__(self, bundle: Bundle | str | os.PathLike, ink: str = "auto", threads: int = 1,
                 unknown_label: Any = "unknown", unknown_threshold: float | None = None, precision: str = "auto"):
        self.ink = check_ink(ink)
        self.threads = threads
        self.precision = precision
        self.unknown_label = unknown_label
        self.unknown_threshold = unknown_threshold
        self.bundle = self._open(bundle)
        self._lock = RLock()
        self._clear()

    def _open(self, bundle: Bundle | str | os.PathLike) -> Bundle:
        if isinstance(bundle, Bundle):
            return bundle
        if not isinstance(bundle, (str, os.PathLike)):
            raise InputError(f"bundle is a {type(bundle).__name__}; expected a Bundle or the path of a bundle "
                             f"directory or .zip")
        return Bundle.load(bundle, threads=self.threads, precision=self.precision)

    def _clear(self) -> None:
        self._emb = np.zeros((0, self.bundle.embedding_dim), np.float32)   # [M, D]
        self._lab: list[Any] = []                                           # [M] labels
        self._pool = semi.empty_pool(self.bundle)                           # [U, D] unlabelled embeddings
        self._head: _Head | None = None

    # ------------------------------------------------------------------ scikit-learn protocol
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments (``bundle`` as the loaded :class:`Bundle`)."""
        return {name: getattr(self, name) for name in PARAMS}

    def set_params(self, **params: Any) -> "FewShotClassifier":
        """Change constructor arguments. A new ``bundle`` (or ``threads`` / ``precision``, which reload
        the bundle from its source) drops every held class: embeddings of another backbone do not mix."""
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise InputError(f"unknown parameter(s) {unknown}; expected some of {list(PARAMS)}")
        if "ink" in params:
            check_ink(params["ink"])
        changed = [k for k in ("threads", "precision") if k in params and params[k] != getattr(self, k)]
        for name, value in params.items():
            if name != "bundle":
                setattr(self, name, value)
        if "bundle" in params:
            bundle = self._open(params["bundle"])
        elif changed:
            bundle = Bundle.load(self.bundle.source, threads=self.threads, precision=self.precision)
        else:
            return self
        with self._lock:
            self.bundle = bundle
            self._clear()
        return self

    def __sklearn_clone__(self) -> "FewShotClassifier":
        """An unfitted classifier with the same parameters, sharing the loaded bundle."""
        return type(self)(**self.get_params())

    def __sklearn_is_fitted__(self) -> bool:
        return self._head is not None

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags  # only scikit-learn calls this

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags(two_d_array=False, three_d_array=True),
                    non_deterministic=False)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in PARAMS)
        return f"FewShotClassifier({args})"

    def score(self, images: Images, labels: Any, sample_weight: Any = None) -> float:
        """Accuracy of ``predict(images)`` against ``labels`` (weighted by ``sample_weight`` if given)."""
        checked = self._check(images, "images")
        y = check_labels(labels, len(checked))
        hit = (self.predict(checked) == y).astype(np.float64)
        return float(np.average(hit, weights=sample_weight))

    # ------------------------------------------------------------------ learning
    def _check(self, images: Images, what: str) -> CheckedImages:
        """Shapes and dtypes checked once (a generator is read once), for counting before embedding."""
        if isinstance(images, CheckedImages):
            return images
        if self.bundle.vector_dim is not None:             # a vector-input bundle: [N, D] numbers
            return check_vectors(images, self.bundle.vector_dim, what)
        return check_images(images, what, check_spec(self.bundle.preprocess_spec), crop=self.bundle.channels == 3)

    def iter_embeddings(self, images: Images, what: str = "images") -> tuple[int, Iterator[np.ndarray]]:
        """``(N, chunks)``: shapes and dtypes are checked now, then each chunk of at most ``CHUNK``
        images is preprocessed and embedded (``float32 [n, D]``) as it is taken."""
        if self.bundle.vector_dim is not None:
            n, chunks = vector_chunks(images, self.bundle.vector_dim, what)
            return n, (self.bundle.embed(x) for x in chunks)
        n, chunks = iter_preprocess(images, self.bundle.preprocess_spec, ink=check_ink(self.ink), what=what)
        return n, (self.bundle.embed(x) for x in chunks)

    def embed(self, images: Images, what: str = "images") -> np.ndarray:
        """Raw images -> embeddings ``[N, D]`` through the bundle's preprocessing and backbone."""
        n, chunks = self.iter_embeddings(images, what)
        return _stack_rows(n, self.bundle.embedding_dim, chunks)

    def _support(self, images: Images, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        if _is_empty(images):
            raise InputError("the support set is empty; expected at least one image per class")
        checked = self._check(images, "support images")
        y = check_labels(labels, len(checked))             # before any pixel work
        return self.embed(checked), y

    def fit(self, images: Images, labels: Any, unlabeled: Images | None = None) -> "FewShotClassifier":
        """Learn the classes in ``labels`` from ``images`` (``[S, H, W]``); replaces earlier classes and
        the unlabelled pool. ``unlabeled``: images without labels that refine the prototypes."""
        emb, y = self._support(images, labels)
        self._check_classes(set(map(_py, y)))
        new = self._unlabeled(unlabeled)
        with self._lock:
            self._set(emb, [_py(v) for v in y], self._grown_pool(new, semi.empty_pool(self.bundle)))
        return self

    def partial_fit(self, images: Images, labels: Any, unlabeled: Images | None = None) -> "FewShotClassifier":
        """Add samples of known or new classes (and ``unlabeled`` images to the pool); equals ``fit`` on
        everything seen so far.

        Classes may arrive one at a time: until two classes are held there is no head to predict with.
        """
        emb, y = self._support(images, labels)
        new = self._unlabeled(unlabeled)
        with self._lock:
            labs = self._lab + [_py(v) for v in y]
            self._check_classes(set(labs), allow_fewer=True)
            self._store(np.concatenate([self._emb, emb]), labs, self._grown_pool(new))
        return self

    def add_unlabeled(self, images: Images) -> "FewShotClassifier":
        """Add images without labels to the pool (the most recent ``refine.max_unlabeled`` are kept) and
        refine the head with them; equals ``partial_fit`` with ``unlabeled=images`` and no labelled sample."""
        if _is_empty(images):
            raise InputError("no unlabeled images given; expected at least one")
        new = self._unlabeled(images)
        with self._lock:
            self._store(self._emb, self._lab, self._grown_pool(new))
        return self

    def _unlabeled(self, images: Images | None) -> np.ndarray:
        """Embeddings ``[U, D]`` of ``unlabeled`` images (``[0, D]`` for None); refused by bundles without a
        refine graph."""
        if images is None:
            return semi.empty_pool(self.bundle)
        semi.require_refiner(self.bundle)
        if _is_empty(images):
            return semi.empty_pool(self.bundle)
        return self.embed(self._check(images, "unlabeled images"), "unlabeled images")

    def _grown_pool(self, new: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        """``base`` (default: the held pool) plus ``new``, the most recent ``refine.max_unlabeled`` kept
        (caller locks)."""
        base = self._pool if base is None else base
        return semi.bounded(base, new, semi.require_refiner(self.bundle).max_unlabeled) if len(new) else base

    def fit_embeddings(self, support: np.ndarray, labels: Any, unlabeled: np.ndarray | None = None) -> "FewShotClassifier":
        """``fit`` on precomputed support embeddings ``[S, D]`` (and unlabelled embeddings ``[U, D]``)."""
        support = np.asarray(support)
        if support.ndim != 2 or support.shape[1] != self.bundle.embedding_dim:
            raise InputError(f"support embeddings have shape {support.shape}; expected [S, "
                             f"{self.bundle.embedding_dim}]")
        y = check_labels(labels, len(support))
        self._check_classes(set(map(_py, y)))
        new = semi.checked_embeddings(unlabeled, self.bundle)
        with self._lock:
            self._set(np.ascontiguousarray(support, dtype=np.float32), [_py(v) for v in y],
                      self._grown_pool(new, semi.empty_pool(self.bundle)))
        return self

    def forget(self, label: Any) -> "FewShotClassifier":
        """Remove class ``label`` and every stored embedding of it (save again to erase it on disk); the
        unlabelled embeddings the current head assigns to it leave the pool too."""
        with self._lock:
            if label not in self._lab:
                known = sorted(set(self._lab), key=lambda v: (isinstance(v, str), v))
                raise InputError(f"cannot forget {label!r}: not a registered class; registered: {known}")
            head = self._head
            column = [_py(v) for v in head.classes].index(label) if head else 0
            pool = semi.pool_after_forget(self.bundle, self._pool, head.params if head else None, column)
            keep = [i for i, v in enumerate(self._lab) if v != label]
            self._store(self._emb[keep], [self._lab[i] for i in keep], pool)
        return self

    def _min_ways(self) -> int:
        return int(self.bundle.manifest.get("limits", {}).get("min_ways", 2))

    def _store(self, emb: np.ndarray, labs: list[Any], pool: np.ndarray | None = None) -> None:
        """Hold these samples (and ``pool``, default: the held one); adapt a head if there are enough
        classes, else hold none (caller locks)."""
        pool = self._pool if pool is None else pool
        if len(set(labs)) >= self._min_ways():
            self._set(emb, labs, pool)
        else:
            self._emb, self._lab, self._pool, self._head = emb, labs, pool, None

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

    def _set(self, emb: np.ndarray, labs: list[Any], pool: np.ndarray | None = None) -> None:
        """Re-adapt on all held embeddings, refined by ``pool`` (default: the held one; caller locks)."""
        pool = self._pool if pool is None else pool
        classes, inverse = np.unique(np.asarray(labs), return_inverse=True)
        onehot = np.eye(len(classes), dtype=np.float32)[inverse]
        params = semi.head_params(self.bundle, emb, onehot, pool)
        self._emb, self._lab, self._pool = emb, labs, pool
        self._head = _Head(classes, params, int(np.bincount(inverse).min()))

    # ------------------------------------------------------------------ inference
    @property
    def classes_(self) -> np.ndarray | None:
        """Labels in column order ``[C]``; None until two classes are held."""
        h = self._head
        return None if h is None else h.classes

    @property
    def params_(self) -> dict[str, np.ndarray] | None:
        """The adapted head's parameters by name; None until two classes are held."""
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
            if not held:
                raise NotFittedError("this FewShotClassifier is not fitted yet; call fit(images, labels) with at "
                                     "least two classes first")
            raise InputError(f"this classifier holds only {len(held)} class ({held}); expected at least two classes "
                             f"to tell apart: add another with partial_fit(images, labels) or `edgemeta adapt`")
        return h

    def _logits(self, images: Images) -> tuple[np.ndarray, _Head]:
        """Logits ``[N, C]``, computed chunk by chunk outside the lock from one consistent head."""
        head = self._snapshot()
        n, chunks = self.iter_embeddings(images)
        return _stack_rows(n, len(head.classes), (self.bundle.classify(z, head.params) for z in chunks)), head

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
        from edgemeta.runtime.state import StateData, write_state   # state files only: not on the predict path

        with self._lock:
            head = self._head
            state = StateData(self.bundle.identity, [_py(v) for v in head.classes] if head else sorted(set(self._lab), key=str),
                              self._emb.copy(), np.zeros(0, np.int64), dict(head.params) if head else {},
                              {"method": self.bundle.method, "ink": self.ink}, unlabeled=self._pool.copy())
            order = {v: i for i, v in enumerate(state.labels)}
            state.sample_class = np.array([order[v] for v in self._lab], np.int64)
        write_state(path, state, key)

    @classmethod
    def load(cls, bundle: Bundle | str | os.PathLike, path: str | os.PathLike, key: bytes | None = None,
             **kwargs: Any) -> "FewShotClassifier":
        """Restore a classifier saved with :meth:`save`; refuses a state saved for another bundle."""
        clf = cls(bundle, **kwargs)
        if type(clf) is not cls:              # a recurrent bundle's OnlineClassifier reads its own state
            return type(clf).load(clf.bundle, path, key, **kwargs)
        from edgemeta.runtime.state import read_state

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
        clf._pool = semi.checked_pool(st.unlabeled, clf.bundle, str(path))
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
