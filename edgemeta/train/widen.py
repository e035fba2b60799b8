"""Net2WiderNet (Chen, Goodfellow & Shlens 2016) for conv4: more channels, the same function.

Widening convolution ``i`` from ``n`` to ``W`` output channels keeps channels ``0..n-1`` and adds
``W - n`` replicas of randomly chosen existing channels (their convolution weights and bias and their
BatchNorm's affine terms and running statistics are copied), so every replica carries exactly the
activation of its source. The NEXT convolution's input weights of a channel replicated ``k`` times
are divided by ``k`` on each of its copies, so the sum it computes is unchanged. To let the replicas
learn different features, a seeded noise is added to those next-layer input weights that sums to
zero over each channel's copies: the copies' outgoing weights differ (so their gradients differ) and,
as the copies' activations are equal at the start, the function is still preserved to float rounding.
The last convolution keeps its width, so the embedding (and a teacher's head) is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edgemeta.errors import InputError
from edgemeta.train.backbones import Conv4


def replica_map(narrow: int, wide: int, gen: torch.Generator) -> torch.Tensor:
    """``[wide]`` int64: the source channel of each widened channel; ``0..narrow-1`` first, then
    ``wide - narrow`` sources drawn uniformly (with replacement) from ``0..narrow-1``."""
    extra = torch.randint(0, narrow, (wide - narrow,), generator=gen)
    return torch.cat([torch.arange(narrow), extra])


def _zero_sum_noise(shape: torch.Size, groups: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Noise ``[Cout, W, 3, 3]`` whose sum over each group of input channels with the same source is
    zero (groups of one get none); ``groups``: ``[W]`` source channel of each input channel."""
    noise = torch.randn(shape, generator=gen) * scale
    counts = torch.bincount(groups).to(noise.dtype)
    sums = torch.zeros(shape[0], int(groups.max()) + 1, *shape[2:]).index_add_(1, groups, noise)
    return noise - (sums / counts.view(1, -1, 1, 1)).index_select(1, groups)


def widen_conv4(narrow: Conv4, widths: Sequence[int], noise: float = 0.0, seed: int = 0) -> Conv4:
    """A :class:`Conv4` with ``widths`` channels that computes ``narrow``'s embedding ``[N, D]``
    (same ``D``); each width must be at least ``narrow``'s and the last one equal to it.
    ``noise``: the symmetry-breaking noise's standard deviation relative to the next convolution's
    weight standard deviation (0: exact copies). Returns an eval-mode module; ``narrow`` is untouched."""
    widths = tuple(int(w) for w in widths)
    old = tuple(narrow.widths)
    if len(widths) != 4 or any(w < o for w, o in zip(widths, old)) or widths[-1] != old[-1]:
        raise InputError(f"widening conv4 {list(old)} needs four widths, each at least the present one and the "
                         f"last equal to {old[-1]} (the embedding is kept), got {list(widths)}")
    if not noise >= 0.0:
        raise InputError(f"widening noise must be a number >= 0, got {noise}")
    gen = torch.Generator().manual_seed(seed)
    state = {k: v.detach().clone() for k, v in narrow.state_dict().items()}
    for i in range(3):
        n, w = old[i], widths[i]
        if w == n:
            continue
        src = replica_map(n, w, gen)
        for key in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"):
            state[f"blocks.{i}.{key}"] = state[f"blocks.{i}.{key}"].index_select(0, src)
        nxt = state[f"blocks.{i + 1}.0.weight"]                     # [Cout, n, 3, 3]
        counts = torch.bincount(src, minlength=n).to(nxt.dtype)
        wide = nxt.index_select(1, src) / counts.index_select(0, src).view(1, -1, 1, 1)
        if noise > 0.0:
            wide = wide + _zero_sum_noise(wide.shape, src, noise * float(nxt.std()), gen)
        state[f"blocks.{i + 1}.0.weight"] = wide
    out = Conv4(narrow.in_channels, widths[0], narrow.image_size, narrow.final_pool, widths)
    out.load_state_dict(state)
    return out.eval()
