"""``FewShotClassifier``: learn a user's classes from a few samples, scikit-learn style."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from edgemeta.contract.preprocess import InputError
from edgemeta.runtime.loaded_bundle import Bundle


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


class FewShotClassifier:
    """Adapt a bundle's head to the user's labelled samples, then classify new images.

    ``fit(images, labels)`` with raw single-channel images (``[N, H, W]`` or a list of 2-D arrays;
    bool, uint8 0..255 or float in [0, 1]) and any str/int labels; ``predict`` / ``predict_proba``
    on new images; ``classes_`` lists the labels in column order. ``ink='low'`` for dark strokes on
    bright paper.
    """

    def __init__(self, bundle: Bundle | str | os.PathLike, ink: str = "high", threads: int = 1):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, threads=threads)
        self.ink = ink
        self.classes_: np.ndarray | None = None
        self.params_: dict[str, np.ndarray] | None = None

    def embed(self, images: np.ndarray | Sequence[np.ndarray], what: str = "images") -> np.ndarray:
        """Raw images -> embeddings ``[N, D]`` through the bundle's preprocessing and backbone."""
        return self.bundle.embed(self.bundle.preprocess(images, ink=self.ink, what=what))

    def fit(self, images: np.ndarray | Sequence[np.ndarray], labels: Any) -> "FewShotClassifier":
        """Learn the classes in ``labels`` from ``images`` (``[S, H, W]``); replaces earlier classes."""
        n = len(images) if not isinstance(images, np.ndarray) or images.ndim else 0
        if n == 0:
            raise InputError("the support set is empty; expected at least one image per class, two classes")
        y = check_labels(labels, n)
        return self.fit_embeddings(self.embed(images, what="support images"), y)

    def fit_embeddings(self, support: np.ndarray, labels: Any) -> "FewShotClassifier":
        """``fit`` on precomputed support embeddings ``[S, D]``."""
        y = check_labels(labels, len(support))
        classes, inverse = np.unique(y, return_inverse=True)
        limits = self.bundle.manifest.get("limits", {})
        if len(classes) < limits.get("min_ways", 2):
            raise InputError(f"the support set has {len(classes)} class ({classes.tolist()}); expected at "
                             f"least {limits.get('min_ways', 2)} different labels to tell apart")
        if len(classes) > limits.get("max_ways", 10**9):
            raise InputError(f"{len(classes)} classes exceed this bundle's limit of {limits['max_ways']}")
        onehot = np.eye(len(classes), dtype=np.float32)[inverse]
        self.params_ = self.bundle.adapt(np.ascontiguousarray(support, dtype=np.float32), onehot)
        self.classes_ = classes
        return self

    def _require_fitted(self) -> None:
        if self.params_ is None:
            raise InputError("this classifier has not learned any classes yet; call fit(images, labels) first")

    def decision_function(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Logits ``[N, C]`` (column j = ``classes_[j]``)."""
        self._require_fitted()
        return self.bundle.classify(self.embed(images), self.params_)

    def predict_proba(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities ``[N, C]`` (column j = ``classes_[j]``)."""
        return softmax(self.decision_function(images))

    def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """The most probable label of each image, ``[N]``."""
        return self.classes_[self.decision_function(images).argmax(axis=1)]
