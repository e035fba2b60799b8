"""The integer resampling rules both runtimes share (numpy only): Pillow's nearest index rule, the
centre crop to a target aspect and the ``box_int`` resize of colour bundles.

``box_int`` (``docs/inputs.md``): per axis, a downscaled axis maps output index ``i`` to the source
bin ``[i*n_in // n_out, (i+1)*n_in // n_out)``; an upscaled axis to the one pixel
``nearest_indices(n_in, n_out)[i]``. Each output value is ``(S + C//2) // C`` with ``S`` the exact
integer sum of the uint8 values over (row bin x column bin) and ``C`` its pixel count.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

SLAB_PIXELS = 1 << 19        # source pixels converted to uint8 at a time (bounds the temporaries)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's nearest-neighbour source index for each output pixel.

    Pillow walks the source in float64 steps: ``x_0 = step / 2``, ``x_i = x_{i-1} + step`` with
    ``step = n_in / n_out``, and takes ``floor(x_i)``. The running sum matters: where the exact
    value ``(i + 0.5) * step`` is a whole number the sum can land just below it (e.g. 64 -> 28).
    """
    step = n_in / n_out
    pos = np.cumsum(np.r_[0.5 * step, np.full(n_out - 1, step)])
    return np.minimum(pos.astype(np.int64), n_in - 1)


class CropBox(NamedTuple):
    y0: int
    x0: int
    h: int
    w: int


def centre_crop_box(h: int, w: int, out_h: int, out_w: int) -> CropBox:
    """The centred crop of an ``h x w`` image with the aspect of ``out_h x out_w`` (integer arithmetic).

    Too wide (``w*out_h > h*out_w``): full height, width ``h*out_w // out_h``; else full width,
    height ``w*out_h // out_w``. A side that would round to 0 (only for extreme target aspects) is 1.
    """
    if w * out_h > h * out_w:
        cw = max(1, (h * out_w) // out_h)
        return CropBox(0, (w - cw) // 2, h, cw)
    ch = max(1, (w * out_h) // out_w)
    return CropBox((h - ch) // 2, 0, ch, w)


class AxisBins(NamedTuple):
    """One axis of ``box_int``: ``starts [n_out]`` / ``counts [n_out]`` of the source bins when
    downscaling (``take`` is None), or the sampled source index per output pixel when upscaling."""
    starts: np.ndarray
    counts: np.ndarray
    take: np.ndarray | None


def axis_bins(n_in: int, n_out: int) -> AxisBins:
    if n_in >= n_out:
        edges = (np.arange(n_out + 1, dtype=np.int64) * n_in) // n_out
        return AxisBins(edges[:-1], np.diff(edges), None)
    return AxisBins(np.arange(n_out, dtype=np.int64), np.ones(n_out, np.int64), nearest_indices(n_in, n_out))


def box_int_resize(crop: np.ndarray, size: tuple[int, int],
                   to_u8: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Same-shaped crops ``[n, h, w, ...]`` (any dtype) -> uint8 ``[n, H, W, K]`` by ``box_int``.

    ``to_u8`` maps raw pixels ``[n', rows, w, ...]`` to uint8 ``[n', rows, w, K]``; it is applied to slabs
    of at most about :data:`SLAB_PIXELS` source pixels (a group of images, or rows of one large image),
    so temporaries stay small; the row sums held at once are int64 ``[n', H, w, K]``.
    """
    n, h, w = crop.shape[:3]
    out_h, out_w = size
    rows, cols = axis_bins(h, out_h), axis_bins(w, out_w)
    count = rows.counts[:, None] * cols.counts[None, :]                      # [H, W]
    group = max(1, SLAB_PIXELS // (max(h, out_h) * w))
    parts = []
    for g0 in range(0, n, group):
        part = crop[g0:g0 + group]
        sums = _row_sums(part, rows, w, to_u8)                               # int64 [g, H, w, K]
        if cols.take is None:
            sums = np.add.reduceat(sums, cols.starts, axis=2)
        else:
            sums = sums[:, :, cols.take]
        parts.append(((sums + (count // 2)[:, :, None]) // count[:, :, None]).astype(np.uint8))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _row_sums(part: np.ndarray, rows: AxisBins, w: int, to_u8: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Integer sums over each output row's source rows: int64 ``[g, H, w, K]``, in row slabs."""
    g, out_h = len(part), len(rows.starts)
    out: np.ndarray | None = None
    i = 0
    while i < out_h:
        j = i + 1
        if rows.take is None:
            stop = lambda k: int(rows.starts[k - 1] + rows.counts[k - 1])      # noqa: E731 - end of bin k-1
            while j < out_h and g * (stop(j + 1) - int(rows.starts[i])) * w <= SLAB_PIXELS:
                j += 1
            r0 = int(rows.starts[i])
            slab = to_u8(part[:, r0:stop(j)])
            block = np.add.reduceat(slab, rows.starts[i:j] - r0, axis=1, dtype=np.int64)
        else:
            while j < out_h and g * (j + 1 - i) * w <= SLAB_PIXELS:
                j += 1
            block = to_u8(part[:, rows.take[i:j]]).astype(np.int64)
        if out is None:
            out = np.empty((g, out_h, w, block.shape[-1]), np.int64)
        out[:, i:j] = block
        i = j
    assert out is not None
    return out
