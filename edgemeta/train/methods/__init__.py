"""Adaptation methods: one torch module per rule, used for meta-training and traced into
``adapt.onnx`` / ``classify.onnx`` for the device (one implementation, two runtimes)."""

from __future__ import annotations

from edgemeta.train.methods.base import HeadMethod
from edgemeta.train.methods.finetune import Finetune
from edgemeta.train.methods.metasgd import MetaSGD
from edgemeta.train.methods.proto import Proto
from edgemeta.train.methods.ridge import Ridge

METHODS: dict[str, type[HeadMethod]] = {"proto": Proto, "metasgd": MetaSGD, "ridge": Ridge, "finetune": Finetune}


def build_method(name: str, dim: int, **kwargs: object) -> HeadMethod:
    """Instantiate a rule for ``dim``-dimensional embeddings; unknown names list the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    if name == "proto":
        return Proto(**kwargs)
    return METHODS[name](dim=dim, **kwargs)


__all__ = ["Finetune", "HeadMethod", "METHODS", "MetaSGD", "Proto", "Ridge", "build_method"]
