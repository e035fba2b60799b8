"""A backbone plus an adaptation rule: the unit that is meta-trained, checkpointed and exported."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgemeta.train.backbones import build_backbone
from edgemeta.train.methods import build_method


class FewShotModel(nn.Module):
    """``backbone``: ``[N, C, H, W] -> [N, D]`` (``C = in_channels``: 1 grey, 3 RGB); ``method``: the head
    rule over those embeddings."""

    def __init__(self, backbone: str, method: str, image_size: tuple[int, int] = (28, 28),
                 backbone_kwargs: dict[str, Any] | None = None, method_kwargs: dict[str, Any] | None = None,
                 in_channels: int = 1):
        super().__init__()
        self.backbone = build_backbone(backbone, in_channels=in_channels, image_size=tuple(image_size),
                                       **(backbone_kwargs or {}))
        self.embedding_dim = int(self.backbone.out_dim)
        self.method = build_method(method, self.embedding_dim, **(method_kwargs or {}))

    def episode_logits(self, x: torch.Tensor, ways: int, shots: int) -> torch.Tensor:
        """``x``: ``[ways*shots + Q, C, H, W]`` support first (class-major) -> query logits ``[Q, ways]``."""
        z = self.backbone(x)
        s = ways * shots
        onehot = torch.nn.functional.one_hot(torch.arange(ways, device=x.device).repeat_interleave(shots),
                                             ways).to(z.dtype)
        return self.method.episode_logits(z[:s], onehot, z[s:])
