"""Adaptation methods: one torch module per rule, used for meta-training and traced into
``adapt.onnx`` / ``classify.onnx`` for the device (one implementation, two runtimes).

Names, descriptions and default settings live in :mod:`edgemeta.train.method_specs` (torch-free);
this module maps each name to its class.
"""

from __future__ import annotations

import inspect

from edgemeta.errors import InputError
from edgemeta.train.method_specs import describe, method_spec
from edgemeta.train.methods.base import HeadMethod
from edgemeta.train.methods.finetune import Finetune
from edgemeta.train.methods.metasgd import MetaSGD
from edgemeta.train.methods.proto import Proto
from edgemeta.train.methods.recurrent import Recurrent
from edgemeta.train.methods.ridge import Ridge

METHODS: dict[str, type[HeadMethod]] = {cls.name: cls for cls in (Proto, MetaSGD, Ridge, Finetune, Recurrent)}


def build_method(name: str, dim: int, **kwargs: object) -> HeadMethod:
    """Instantiate rule ``name`` for ``dim``-dimensional embeddings with its registry defaults,
    overridden by ``kwargs``; an unknown name or setting raises :class:`InputError` listing the known ones."""
    spec = method_spec(name)
    cls = METHODS[name]
    settings = {**spec.method_kwargs, **kwargs}
    accepted = set(inspect.signature(cls).parameters) - {"dim"}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise InputError(f"method {name!r} has no settings {unknown}; its --method-kwargs are {sorted(accepted)}")
    if "dim" in inspect.signature(cls).parameters:      # rules whose parameters are per dimension
        settings["dim"] = dim
    return cls(**settings)


__all__ = ["Finetune", "HeadMethod", "METHODS", "MetaSGD", "Proto", "Recurrent", "Ridge", "build_method", "describe"]
