"""Random affine augmentation of training images (shift, rotation, scale), batched on any device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, gen: torch.Generator, shift: float = 0.15, rotate_deg: float = 10.0,
                  scale: float = 0.1) -> torch.Tensor:
    """``x [N, C, H, W]`` -> the same, each image shifted by up to ``shift`` of its half-size,
    rotated by up to ``rotate_deg`` degrees and scaled by ``1 ± scale`` (bilinear, zero padding)."""
    n = x.shape[0]
    u = torch.rand(n, 4, generator=gen, device=x.device) * 2.0 - 1.0
    angle = u[:, 0] * math.radians(rotate_deg)
    s = 1.0 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * shift], 1),
                         torch.stack([sin, cos, u[:, 3] * shift], 1)], 1)          # [N, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
