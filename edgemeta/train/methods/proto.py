"""Prototypical Networks (Snell et al. 2017) with a learned temperature."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgemeta.train.methods.base import HeadMethod
from edgemeta.train.methods.linear_head import class_means


class Proto(HeadMethod):
    """prototypes ``[C, D]`` = class means; logits = ``-scale * ||x - p||^2`` (scale meta-learned)."""

    name = "proto"
    param_names = ("prototypes",)

    def __init__(self, init_scale: float = 1.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(init_scale)).log())

    def adapt(self, support: torch.Tensor, onehot: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prototypes": class_means(support, onehot)}

    def classify(self, embeddings: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        p = params["prototypes"]
        d2 = (embeddings * embeddings).sum(1, keepdim=True) - 2.0 * embeddings @ p.t() + (p * p).sum(1)[None, :]
        return -self.log_scale.exp() * d2

    def hparams(self) -> dict[str, Any]:
        return {"distance": "squared_euclidean", "scale": float(self.log_scale.detach().exp())}
