"""The frozen feature map of a vector-input bundle: normalise, MLP, append a constant 1.

``inputs [N, D]`` -> ``(x - mean) / std`` -> ReLU MLP (``hidden`` widths) -> ``[N, F]`` -> ``[N, F + 1]``
with a trailing column of ones, so a linear head over the features carries its own bias and the
sufficient statistics ``sum phi phi^T`` hold the sample count in their last diagonal entry. The
normalisation lives in this graph (``backbone.onnx``); the manifest records the numbers only as
information.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class VectorFeatures(nn.Module):
    """``inputs [N, D]`` -> ``features [N, F + 1]`` (last column 1). ``mean``/``std``: ``[D]`` buffers."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (40, 40), mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        self.in_dim, self.hidden = int(in_dim), tuple(int(h) for h in hidden)
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must list at least one positive width, got {hidden}")
        self.register_buffer("mean", torch.tensor(list(mean) if mean is not None else [0.0] * in_dim).float())
        self.register_buffer("std", torch.tensor(list(std) if std is not None else [1.0] * in_dim).float())
        layers: list[nn.Module] = []
        width = self.in_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers)

    @property
    def dim(self) -> int:
        """Width of the output, the constant column included."""
        return self.hidden[-1] + 1

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        z = self.net((inputs - self.mean) / self.std)
        return torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)
