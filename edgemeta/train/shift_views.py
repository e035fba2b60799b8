"""Shift-averaged embedding: the backbone applied to whole-pixel shifts of each image, averaged.

A test-time ensemble baked into ``backbone.onnx`` (Pad + Slice + Concat around the backbone), so
every runtime that runs the graph gets it with no code of its own. It costs one backbone pass per
view; 1-shot prototypes gain most (see README "Methods and levers").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (dy, dx): the image content moves down by dy and right by dx pixels; vacated pixels are 0 (no ink)
SHIFT_VIEWS: dict[int, tuple[tuple[int, int], ...]] = {
    1: ((0, 0),),
    5: ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)),
    9: tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)),
}


def shifted_views(x: torch.Tensor, shifts: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[V*N, C, H, W]``: view ``v`` of image ``n`` at row ``v*N + n``."""
    h, w = x.shape[-2:]
    p = max(max(abs(dy), abs(dx)) for dy, dx in shifts)
    xp = F.pad(x, (p, p, p, p)) if p else x
    return torch.cat([xp[..., p - dy:p - dy + h, p - dx:p - dx + w] for dy, dx in shifts])


class ShiftAveraged(nn.Module):
    """``[N, C, H, W] -> [N, D]``: mean of ``backbone`` over the shifted views of each image."""

    def __init__(self, backbone: nn.Module, views: int):
        super().__init__()
        if views not in SHIFT_VIEWS:
            raise ValueError(f"shift views must be one of {sorted(SHIFT_VIEWS)}, got {views}")
        self.backbone, self.views, self.shifts = backbone, views, SHIFT_VIEWS[views]
        self.out_dim = backbone.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.backbone(shifted_views(x, self.shifts))
        return z.reshape(len(self.shifts), -1, z.shape[-1]).mean(0)

    def folded(self) -> "ShiftAveraged":
        return ShiftAveraged(self.backbone.folded(), self.views)
