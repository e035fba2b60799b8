"""The adaptation rules as plain data (no torch): one entry per rule, read by the trainer's
defaults, ``build_method`` and the CLI's help.

Each :class:`MethodSpec` holds the rule's name, a one-line description, the constructor settings
a user gets without ``--method-kwargs``, and the training settings the rule needs by default
(e.g. ``finetune`` pre-trains instead of meta-training). The torch classes are mapped to these
names in :mod:`edgemeta.train.methods`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from edgemeta.errors import InputError


@dataclass(frozen=True)
class MethodSpec:
    """One adaptation rule: ``method_kwargs`` go to its constructor, ``train`` to :class:`TrainConfig`."""

    name: str
    description: str
    method_kwargs: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)      # TrainConfig fields, e.g. pretrain_steps


METHOD_SPECS: Mapping[str, MethodSpec] = MappingProxyType({s.name: s for s in (
    MethodSpec("proto", "Prototypical Networks: class means, squared distance, learned temperature."),
    MethodSpec("metasgd", "Linear head from prototypes, then gradient steps with meta-learned per-dimension "
                          "step sizes (Proto-MAML + Meta-SGD, head only).",
               method_kwargs={"steps": 3, "init_lr": 0.1}),
    MethodSpec("ridge", "R2-D2: closed-form ridge regression head with meta-learned lambda, scale and bias.",
               method_kwargs={"init_lambda": 1.0, "init_alpha": 10.0}),
    MethodSpec("finetune", "Transfer-learning baseline: many-class pre-training, then SGD on a zero-initialised "
                           "linear head (nothing meta-learned).",
               method_kwargs={"steps": 100, "lr": 0.1}, train={"pretrain_steps": 20_000, "max_episodes": 0}),
    MethodSpec("recurrent", "Online memory per class (one update per sample, constant time): the exact class "
                            "mean plus a GRU state read out into a learned correction of it; trained on shuffled "
                            "support with random shot counts.",
               method_kwargs={"hidden": 128, "memory": "class_mean"}),
)})


def method_spec(name: str) -> MethodSpec:
    """The registry entry of ``name``; an unknown name raises :class:`InputError` listing the known ones."""
    try:
        return METHOD_SPECS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; known methods: {sorted(METHOD_SPECS)}") from None


def train_defaults(name: str) -> dict[str, Any]:
    """The :class:`TrainConfig` fields a user gets with ``--method name`` and no other flags:
    the rule's training settings plus ``method_kwargs`` (a fresh dict each call)."""
    spec = method_spec(name)
    return {**spec.train, "method_kwargs": dict(spec.method_kwargs)}


def describe() -> str:
    """One line per rule, ``name: description (defaults)``, for the CLI's ``--method`` help."""
    lines = []
    for spec in METHOD_SPECS.values():
        settings = {**spec.method_kwargs, **spec.train}
        extra = f" Defaults: {', '.join(f'{k}={v}' for k, v in settings.items())}." if settings else ""
        lines.append(f"{spec.name}: {spec.description}{extra}")
    return "\n".join(lines)
