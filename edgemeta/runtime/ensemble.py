"""Several adaptation heads over one backbone, their probabilities averaged with weights.

Bundles exported from the same meta-trained backbone with different rules (say ``proto`` and
``ridge``) share ``backbone.onnx`` byte for byte: images are embedded once, each head adapts on the
same embeddings, and ``predict_proba`` is the weighted mean of the heads' softmax outputs. Inputs
follow the same rules as :class:`FewShotClassifier` (docs/inputs.md), in chunks of ``CHUNK`` images.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from edgemeta.errors import InputError, NotFittedError
from edgemeta.runtime.classifier import FewShotClassifier, Images, check_labels, softmax
from edgemeta.runtime.loaded_bundle import Bundle


class HeadEnsemble:
    """``HeadEnsemble([(bundle_a, 0.7), (bundle_b, 0.3)])``: same backbone, weighted probabilities."""

    def __init__(self, members: Sequence[tuple[Bundle | str | os.PathLike, float]], ink: str = "auto", threads: int = 1,
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
        """Adapt every head on the same support embeddings (``[S, H, W]`` images, ``[S]`` labels)."""
        first = self.heads[0]
        checked = first._check(images, "support images")
        y = check_labels(labels, len(checked))
        emb = first.embed(checked)
        for h in self.heads:
            h.fit_embeddings(emb, y)
        self.classes_ = first.classes_
        return self

    def predict_proba(self, images: Images) -> np.ndarray:
        """Weighted mean of the heads' probabilities ``[N, C]`` (columns in ``classes_`` order)."""
        if self.classes_ is None:
            raise NotFittedError("this HeadEnsemble is not fitted yet; call fit(images, labels) with at least "
                                 "two classes first")
        params = [h.params_ for h in self.heads]
        n, chunks = self.heads[0].iter_embeddings(images)
        out = np.empty((n, len(self.classes_)), np.float64)
        at = 0
        for z in chunks:
            out[at:at + len(z)] = sum(w * softmax(h.bundle.classify(z, p))
                                      for w, h, p in zip(self.weights, self.heads, params))
            at += len(z)
        return out

    def predict(self, images: Images) -> np.ndarray:
        """The most probable label of each image ``[N]``."""
        return self.classes_[self.predict_proba(images).argmax(1)] if self.classes_ is not None \
            else self.predict_proba(images)
