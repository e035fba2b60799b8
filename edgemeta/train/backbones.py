"""Backbone registry: name -> factory (the ProtoNets / timm pattern).

Every backbone maps ``[N, C, H, W]`` float32 to ``[N, out_dim]`` and has no dependence on batch
statistics in eval mode (what the exported ``backbone.onnx`` runs). Colour backbones
(``in_channels == 3``, values in [0, 1]) start with a fixed :class:`Normalize` layer, so the ImageNet
mean/std live inside ``backbone.onnx`` (the bundle's ``normalization: "in_graph"``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

BACKBONES: dict[str, Callable[..., nn.Module]] = {}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONES[name] = fn
        return fn
    return deco


def build_backbone(name: str, **kwargs: object) -> nn.Module:
    """Instantiate a registered backbone; unknown names list the known ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, ``[N, 3, H, W] -> [N, 3, H, W]``; mean and std are fixed
    buffers (never trained, not in the state dict: the code is their only source)."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def input_layer(in_channels: int) -> nn.Module:
    """:class:`Normalize` for colour (3-channel) inputs, identity otherwise."""
    return Normalize() if in_channels == 3 else nn.Identity()


def _conv_block(cin: int, cout: int, pool: bool = True) -> nn.Sequential:
    """conv3x3 -> BatchNorm -> maxpool2 -> ReLU. ReLU and max-pooling commute (both monotone), so this
    is the textbook conv-BN-ReLU-pool block, computed with 4x fewer ReLUs (a measured training win
    on CPU). Parameter names are those of the textbook order."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                         nn.MaxPool2d(2) if pool else nn.Identity(), nn.ReLU())


class Conv4(nn.Module):
    """4 x [conv3x3-``hidden``, BatchNorm, ReLU, maxpool2] then flatten: ``[N,C,28,28] -> [N, hidden]``,
    ``[N,3,84,84] -> [N, hidden*5*5]`` (1600-d, ProtoNets/MAML on mini-ImageNet), pool and ReLU
    applied in the equivalent cheaper order (see ``_conv_block``); colour inputs are normalised first.

    ``final_pool=False`` drops the last max-pool: a ``hidden x 3 x 3`` (576-d) embedding at 28x28,
    ``hidden x 10 x 10`` at 84x84. ``widths`` (four channel counts, one per convolution) replaces the
    all-layers ``hidden``: the embedding is then ``widths[-1] x h x w``.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, image_size: tuple[int, int] = (28, 28),
                 final_pool: bool = True, widths: tuple[int, ...] | list[int] | None = None):
        super().__init__()
        widths = tuple(int(c) for c in (widths if widths is not None else (hidden,) * 4))
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"conv4 takes four positive channel counts, got widths={list(widths)}")
        pools = [True, True, True, final_pool]
        self.in_channels, self.image_size = in_channels, tuple(image_size)
        self.widths, self.final_pool = widths, final_pool
        self.norm = input_layer(in_channels)
        cins = (in_channels, *widths[:-1])
        self.blocks = nn.Sequential(*[_conv_block(cins[i], widths[i], pools[i]) for i in range(4)])
        h, w = image_size
        for p in pools:
            h, w = (h // 2, w // 2) if p else (h, w)
        if h < 1 or w < 1:
            raise ValueError(f"conv4 needs inputs of at least 16x16, got {image_size}")
        self.out_dim = widths[-1] * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.norm(x)).flatten(1)

    def folded(self) -> "Conv4":
        """An eval-mode copy with every BatchNorm folded into its convolution (for export)."""
        import copy

        m = copy.deepcopy(self).eval()
        for i, blk in enumerate(m.blocks):
            m.blocks[i] = nn.Sequential(fuse_conv_bn_eval(blk[0], blk[1]), nn.Identity(), blk[2], blk[3])
        m = m.to(memory_format=torch.contiguous_format)
        return m


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al. 2018) on ``[N, C, H, W]``: in training, zero ``block x block`` squares
    so that about ``drop_rate`` of the activations are dropped, rescale the rest; identity in eval mode
    and when ``drop_rate == 0``."""

    def __init__(self, drop_rate: float = 0.0, block: int = 5):
        super().__init__()
        self.drop_rate, self.block = float(drop_rate), int(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_rate <= 0.0:
            return x
        h, w = x.shape[-2:]
        b = min(self.block, h, w)
        gamma = self.drop_rate / (b * b) * (h * w) / max(1, (h - b + 1) * (w - b + 1))
        seeds = (torch.rand(x.shape[0], x.shape[1], h, w, device=x.device) < gamma).to(x.dtype)
        keep = 1.0 - F.max_pool2d(seeds, b, stride=1, padding=b // 2)[..., :h, :w]
        return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))


class ResBlock(nn.Module):
    """ResNet-12 block (MetaOptNet / RFS): 3 x [conv3x3, BatchNorm] with LeakyReLU(0.1) between,
    plus a conv1x1-BatchNorm shortcut, LeakyReLU, maxpool2, optional DropBlock:
    ``[N, cin, H, W] -> [N, cout, H//2, W//2]``."""

    def __init__(self, cin: int, cout: int, drop_rate: float = 0.0, drop_block: int = 5):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.conv3, self.bn3 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.short, self.bn_short = nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)
        self.drop = DropBlock(drop_rate, drop_block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.act(out + self.bn_short(self.short(x)))
        return self.drop(self.pool(out))

    def fold_(self) -> None:
        """Fold every BatchNorm into its convolution in place (eval mode only)."""
        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"), ("short", "bn_short")):
            setattr(self, conv, fuse_conv_bn_eval(getattr(self, conv), getattr(self, bn)))
            setattr(self, bn, nn.Identity())


class ResNet12(nn.Module):
    """ResNet-12 (64-160-320-640 channels, about 12.4M parameters): ``[N, C, H, W] -> [N, 640]`` by
    global average pooling (RFS), or ``[N, 640*(H/16)*(W/16)]`` flattened with ``avg_pool=False``
    (MetaOptNet). Colour inputs are normalised first. ``drop_rate > 0`` turns DropBlock on."""

    def __init__(self, in_channels: int = 3, image_size: tuple[int, int] = (84, 84),
                 channels: tuple[int, ...] = (64, 160, 320, 640), avg_pool: bool = True,
                 drop_rate: float = 0.0, drop_block: int = 5):
        super().__init__()
        h, w = image_size
        if h < 16 or w < 16:
            raise ValueError(f"resnet12 needs inputs of at least 16x16, got {image_size}")
        self.norm = input_layer(in_channels)
        cins = (in_channels, *channels[:-1])
        # DropBlock on the last two blocks only, as in MetaOptNet / RFS
        self.blocks = nn.Sequential(*[ResBlock(ci, co, drop_rate if i >= 2 else 0.0, drop_block)
                                      for i, (ci, co) in enumerate(zip(cins, channels))])
        self.avg_pool = avg_pool
        self.out_dim = channels[-1] if avg_pool else channels[-1] * (h // 16) * (w // 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.norm(x))
        return x.mean((2, 3)) if self.avg_pool else x.flatten(1)

    def folded(self) -> "ResNet12":
        """An eval-mode copy with every BatchNorm folded into its convolution (for export)."""
        import copy

        m = copy.deepcopy(self).eval()
        for blk in m.blocks:
            blk.fold_()
        return m.to(memory_format=torch.contiguous_format)


class MLP(nn.Module):
    """Flatten then ``[Linear, BatchNorm1d, ReLU] x depth`` -> Linear: for vector inputs ``[N,1,1,F]``."""

    def __init__(self, in_features: int, hidden: int = 256, out_dim: int = 64, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            d = hidden
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    def folded(self) -> "MLP":
        import copy

        return copy.deepcopy(self).eval()


@register("conv4")
def conv4(in_channels: int = 1, image_size: tuple[int, int] = (28, 28), hidden: int = 64,
          final_pool: bool = True, widths: list[int] | None = None) -> nn.Module:
    return Conv4(in_channels, hidden, image_size, final_pool, widths)


@register("resnet12")
def resnet12(in_channels: int = 3, image_size: tuple[int, int] = (84, 84), avg_pool: bool = True,
             drop_rate: float = 0.0, drop_block: int = 5) -> nn.Module:
    return ResNet12(in_channels, image_size, avg_pool=avg_pool, drop_rate=drop_rate, drop_block=drop_block)


@register("mlp")
def mlp(in_channels: int = 1, image_size: tuple[int, int] = (28, 28), hidden: int = 256,
        out_dim: int = 64) -> nn.Module:
    return MLP(in_channels * image_size[0] * image_size[1], hidden, out_dim)
