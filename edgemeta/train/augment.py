"""Batched training augmentation on any device: random affine for glyphs, crop/flip/colour jitter for photos."""

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


# Random-resized-crop area range. torchvision's default (0.08, 1) suits 224-pixel ImageNet pre-training;
# mini-ImageNet photos are only 84x84, so an 8 % crop is a 24-pixel patch blown up 3.5x (mostly blur).
# (0.2, 1) keeps at least a 38-pixel patch, still a strong regulariser for the 64-class pre-training.
CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
JITTER = 0.4                     # brightness, contrast and saturation factors drawn from [0.6, 1.4]
_LUMA = (0.299, 0.587, 0.114)    # ITU-R 601 grey, as torchvision's rgb_to_grayscale


def random_resized_crop_flip(x: torch.Tensor, gen: torch.Generator, scale: tuple[float, float] = CROP_SCALE,
                             ratio: tuple[float, float] = CROP_RATIO) -> torch.Tensor:
    """``x [N, C, H, W]`` -> the same shape: per image a random crop of ``scale`` of the area and aspect
    ``ratio`` (log-uniform), inside the image, resized back to ``H x W`` (bilinear), mirrored
    left-right with probability 1/2."""
    n = x.shape[0]
    u = torch.rand(n, 5, generator=gen, device=x.device)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    aspect = torch.exp(log_r)
    sw = torch.sqrt(area * aspect).clamp(max=1.0)          # crop width / image width
    sh = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (u[:, 2] * 2.0 - 1.0) * (1.0 - sw)                 # centre kept so the crop stays inside
    cy = (u[:, 3] * 2.0 - 1.0) * (1.0 - sh)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    zero = torch.zeros_like(sw)
    theta = torch.stack([torch.stack([sw * flip, zero, cx], 1), torch.stack([zero, sh, cy], 1)], 1)   # [N, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(x: torch.Tensor, gen: torch.Generator, strength: float = JITTER) -> torch.Tensor:
    """``x [N, 3, H, W]`` in [0, 1] -> the same, brightness, contrast and saturation each scaled by a
    factor from ``[1 - strength, 1 + strength]`` per image (torchvision's formulas, in this fixed
    order), clamped to [0, 1]."""
    n = x.shape[0]
    f = 1.0 + (torch.rand(n, 3, 1, 1, 1, generator=gen, device=x.device) * 2.0 - 1.0) * strength
    luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x * f[:, 0]).clamp(0.0, 1.0)
    mean = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - mean) * f[:, 1] + mean).clamp(0.0, 1.0)
    grey = (x * luma).sum(1, keepdim=True)
    return ((x - grey) * f[:, 2] + grey).clamp(0.0, 1.0)


def photo_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Training augmentation of colour photos ``[N, 3, H, W]`` in [0, 1]: random resized crop, flip,
    colour jitter; deterministic given ``gen``'s state."""
    return colour_jitter(random_resized_crop_flip(x, gen), gen)
