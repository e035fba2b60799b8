"""Proto-MAML initialisation + Meta-SGD step sizes + ANIL head-only inner loop."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgemeta.train.methods.base import HeadMethod
from edgemeta.train.methods.linear_head import class_means, linear_logits, sgd_steps


class MetaSGD(HeadMethod):
    """Linear head initialised from prototypes (``W = 2s·p``, ``b = -s·‖p‖²``, Triantafillou et al.
    2020), then ``steps`` gradient steps on the support cross-entropy with meta-learned
    per-dimension step sizes ``lr_weight [T, D]`` and per-step ``lr_bias [T]`` (Li et al. 2017).

    Outputs ``weight [C, D]`` and ``bias [C]``; logits ``x @ weight.T + bias``.
    """

    name = "metasgd"
    param_names = ("weight", "bias")

    def __init__(self, dim: int, steps: int = 3, init_lr: float = 0.1, init_scale: float = 1.0):
        super().__init__()
        self.steps = int(steps)
        self.log_scale = nn.Parameter(torch.tensor(float(init_scale)).log())
        self.lr_weight = nn.Parameter(torch.full((self.steps, dim), float(init_lr)))
        self.lr_bias = nn.Parameter(torch.full((self.steps,), float(init_lr)))

    def adapt(self, support: torch.Tensor, onehot: torch.Tensor) -> dict[str, torch.Tensor]:
        protos = class_means(support, onehot)
        scale = self.log_scale.exp()
        weight, bias = 2.0 * scale * protos, -scale * (protos * protos).sum(1)
        weight, bias = sgd_steps(support, onehot, weight, bias, self.lr_weight, self.lr_bias)
        return {"weight": weight, "bias": bias}

    def classify(self, embeddings: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return linear_logits(embeddings, params["weight"], params["bias"])

    def hparams(self) -> dict[str, Any]:
        lw = self.lr_weight.detach()
        return {"init": "prototypes", "steps": self.steps, "scale": float(self.log_scale.detach().exp()),
                "lr_weight_mean_per_step": [float(v) for v in lw.mean(1)],
                "lr_bias_per_step": [float(v) for v in self.lr_bias.detach()]}
