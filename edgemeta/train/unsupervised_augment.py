"""The strong augmentation that turns one unlabelled image into the shots and queries of its own
class in an unsupervised task (torch, batched, on any device, deterministic given the generator).

Glyphs (1 channel): random stroke thickening, a random affine map (rotation, anisotropic scale,
shear, shift) and a random erased square; photos (3 channels): the photo training augmentation
(random resized crop, flip, colour jitter) with random grey conversion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgemeta.train.augment import photo_augment

ROTATE_DEG = 20.0        # rotation drawn from [-20, 20] degrees
SCALE = (0.75, 1.25)     # per-axis scale factors
SHEAR = 0.3              # shear factor drawn from [-0.3, 0.3]
SHIFT = 0.25             # shift drawn from [-0.25, 0.25] of the half-size (3.5 pixels at 28x28)
THICKEN_P = 0.3          # probability of a 3x3 dilation of the strokes
ERASE_P = 0.5            # probability of erasing one square
ERASE_SIDE = 0.35        # side of the erased square, as a fraction of the image side
GREY_P = 0.2             # photos: probability of turning a view grey


def _affine_theta(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``[n, 2, 3]`` random affine maps (output -> input coordinates, as ``affine_grid`` takes them)."""
    u = torch.rand(n, 6, generator=gen, device=device)
    angle = (u[:, 0] * 2 - 1) * math.radians(ROTATE_DEG)
    sx = SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 1]
    sy = SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 2]
    shear = (u[:, 3] * 2 - 1) * SHEAR
    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotation @ shear @ scale, inverted into the sampling map by dividing by the scale
    a = torch.stack([torch.stack([cos, -sin + cos * shear], 1), torch.stack([sin, cos + sin * shear], 1)], 1)
    a = a / torch.stack([sx, sy], 1)[:, None, :]
    t = (torch.stack([u[:, 4], u[:, 5]], 1) * 2 - 1) * SHIFT
    return torch.cat([a, t[:, :, None]], 2)


def _erase(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Zero one random square of side ``ERASE_SIDE`` in each image with probability ``p``."""
    n, _, h, w = x.shape
    u = torch.rand(n, 3, generator=gen, device=x.device)
    side_h, side_w = max(1, round(ERASE_SIDE * h)), max(1, round(ERASE_SIDE * w))
    top = (u[:, 0] * (h - side_h + 1)).floor()[:, None, None, None]
    left = (u[:, 1] * (w - side_w + 1)).floor()[:, None, None, None]
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    inside = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
    return x.masked_fill(inside & (u[:, 2] < p)[:, None, None, None], 0.0)


def glyph_views(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``x [N, 1, H, W]`` float in [0, 1] (1 = ink) -> the same shape, each row an independent strong view."""
    n = x.shape[0]
    thicken = torch.rand(n, generator=gen, device=x.device) < THICKEN_P
    x = torch.where(thicken[:, None, None, None], F.max_pool2d(x, 3, stride=1, padding=1), x)
    grid = F.affine_grid(_affine_theta(n, gen, x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _erase(x, gen, ERASE_P)


def photo_views(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``x [N, 3, H, W]`` in [0, 1] -> the same shape: crop, flip, colour jitter, then grey with probability
    ``GREY_P``."""
    x = photo_augment(x, gen)
    grey = (x * torch.tensor((0.299, 0.587, 0.114), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, True)
    pick = (torch.rand(x.shape[0], generator=gen, device=x.device) < GREY_P)[:, None, None, None]
    return torch.where(pick, grey.expand_as(x), x)


def unsupervised_views(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Strong views of ``x [N, C, H, W]``: :func:`glyph_views` for 1 channel, :func:`photo_views` for 3."""
    return glyph_views(x, gen) if x.shape[1] == 1 else photo_views(x, gen)
