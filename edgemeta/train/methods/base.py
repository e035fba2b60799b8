"""The interface every adaptation rule implements."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class HeadMethod(nn.Module):
    """An adaptation rule: support embeddings -> head parameters -> logits.

    ``adapt(support [S, D], onehot [S, C]) -> {name: tensor}`` and
    ``classify(embeddings [N, D], params) -> logits [N, C]``. Both must be traceable to ONNX with
    ``S``, ``C`` and ``N`` dynamic; ``param_names`` fixes the order of the head's outputs.
    """

    name: str = ""
    param_names: tuple[str, ...] = ()

    def adapt(self, support: torch.Tensor, onehot: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def classify(self, embeddings: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        """Meta-learned scalars and settings recorded in the manifest's ``head`` entry."""
        return {}

    def episode_logits(self, support: torch.Tensor, onehot: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return self.classify(query, self.adapt(support, onehot))
