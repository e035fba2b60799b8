"""Several adaptation heads over one backbone, their probabilities averaged with weights.

Bundles exported from the same meta-trained backbone with different rules (say ``proto`` and
``ridge``) share ``backbone.onnx`` byte for byte: images are embedded once, each head adapts on the
same embeddings, and ``predict_proba`` is the weighted mean of the heads' softmax outputs.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from edgemeta.errors import InputError
from edgemeta.runtime.classifier import FewShotClassifier, Images, check_labels, softmax
from edgemeta.runtime.loaded_bundle import Bundle


class HeadEnsemble:
    """``HeadEnsemble([(bundle_a, 0.7), (bundle_b, 0.3)])``: same backbone, weighted probabilities."""

    def __init__(self, members: Sequence[tuple[Bundle | str | os.PathLike, float]], ink: str = "high", threads: int = 1,
                 precision: str = "fp32"):
        if len(members) < 1:
            raise InputError("an ensemble needs at least one (bundle, weight) pair")
        self.heads = [FewShotClassifier(b, ink=ink, threads=threads, precision=precision) for b, _ in members]
        w = np.asarray([float(wt) for _, wt in members])
        if np.any(w < 0) or w.sum() <= 0:
            raise InputError(f"ensemble weights must be >= 0 with a positive sum, got {w.tolist()}")
        self.weights = w / w.sum()
        ref = self.heads[0].bundle.manifest["files"]["backbone.onnx"]["sha256"]
        for h in self.heads[1:]:
            if h.bundle.manifest["files"]["backbone.onnx"]["sha256"] != ref or h.bundle.preprocess_spec != \
                    self.heads[0].bundle.preprocess_spec:
                raise InputError(f"{h.bundle.source} has another backbone or preprocessing than "
                                 f"{self.heads[0].bundle.source}; an ensemble shares one backbone")
        self.classes_: np.ndarray | None = None

    def fit(self, images: Images, labels: Any) -> "HeadEnsemble":
        emb = self.heads[0].embed(images, what="support images")
        y = check_labels(labels, len(emb))
        for h in self.heads:
            h.fit_embeddings(emb, y)
        self.classes_ = self.heads[0].classes_
        return self

    def predict_proba(self, images: Images) -> np.ndarray:
        """Weighted mean of the heads' probabilities ``[N, C]`` (columns in ``classes_`` order)."""
        if self.classes_ is None:
            raise InputError("call fit(images, labels) with at least two classes first")
        emb = self.heads[0].embed(images)
        return sum(w * softmax(h.bundle.classify(emb, h.params_)) for w, h in zip(self.weights, self.heads))

    def predict(self, images: Images) -> np.ndarray:
        return self.classes_[self.predict_proba(images).argmax(1)]
