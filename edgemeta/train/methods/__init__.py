"""Adaptation methods: one torch module per rule, used for meta-training and traced into
``adapt.onnx`` / ``classify.onnx`` for the device (one implementation, two runtimes)."""

from edgemeta.train.methods.base import HeadMethod
from edgemeta.train.methods.proto import Proto

METHODS: dict[str, type[HeadMethod]] = {"proto": Proto}


def build_method(name: str, **kwargs: object) -> HeadMethod:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    return METHODS[name](**kwargs)


__all__ = ["HeadMethod", "METHODS", "Proto", "build_method"]
