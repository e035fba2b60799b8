"""The transfer-learning baseline: a linear head from zero, plain SGD on the support set."""

from __future__ import annotations

from typing import Any

import torch

from edgemeta.train.methods.base import HeadMethod
from edgemeta.train.methods.linear_head import linear_logits, sgd_steps


class Finetune(HeadMethod):
    """``weight [C, D] = 0``, ``bias [C] = 0``, then ``steps`` SGD steps with fixed ``lr`` on
    L2-normalised embeddings times ``feature_scale``. Nothing here is meta-learned: the backbone is
    pre-trained as an ordinary many-class classifier (``edgemeta train --method finetune``)."""

    name = "finetune"
    param_names = ("weight", "bias")

    def __init__(self, dim: int, steps: int = 100, lr: float = 0.1, feature_scale: float = 10.0):
        super().__init__()
        self.steps, self.lr, self.feature_scale = int(steps), float(lr), float(feature_scale)
        self.register_buffer("lrs", torch.full((self.steps,), self.lr), persistent=False)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_scale * x / (x.norm(dim=1, keepdim=True) + 1e-6)

    def adapt(self, support: torch.Tensor, onehot: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self._features(support)
        weight = torch.zeros_like(onehot.t() @ x)          # [C, D], C taken from the labels
        bias = torch.zeros_like(onehot[0])
        weight, bias = sgd_steps(x, onehot, weight, bias, self.lrs, self.lrs)
        return {"weight": weight, "bias": bias}

    def classify(self, embeddings: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return linear_logits(self._features(embeddings), params["weight"], params["bias"])

    def hparams(self) -> dict[str, Any]:
        return {"init": "zeros", "steps": self.steps, "lr": self.lr, "feature_scale": self.feature_scale,
                "features": "l2-normalised x feature_scale"}
