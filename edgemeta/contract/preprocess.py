"""Raw single-channel image -> backbone input, exactly as a bundle's ``preprocess`` says (numpy only).

This one function is used by the training data pipeline and by the device runtime, so the two can
never drift apart. The spec (stored in ``manifest.json`` under ``preprocess``)::

    {"channels": 1, "size": [H, W], "resize": "nearest", "value_range": [0.0, 1.0], "ink": "high"}

- Raw input values: ``bool`` (True = ink), ``uint8`` (0..255) or float in [0, 1].
- ``resize``: a Pillow filter name. ``nearest`` is computed here in numpy with Pillow's own
  sampling rule (:func:`nearest_indices`), other filters go through Pillow.
- ``ink: "high"``: strokes have high values after preprocessing. Callers whose images have dark
  ink on bright paper pass ``ink="low"`` and the image is inverted (``1 - x``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgemeta.errors import InputError

MIN_SIDE = 4          # smaller images carry no usable strokes
MAX_ASPECT = 4        # beyond this an "image" is almost always a flattened or mis-shaped array
PILLOW_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")


def default_spec(size: Sequence[int] = (28, 28), resize: str = "nearest") -> dict[str, Any]:
    return {"channels": 1, "size": [int(size[0]), int(size[1])], "resize": resize,
            "value_range": [0.0, 1.0], "ink": "high"}


def _to_unit_float(img: np.ndarray, what: str) -> np.ndarray:
    """Map bool / uint8 / float images onto float32 in [0, 1]; refuse anything else."""
    if img.dtype == np.bool_:
        return img.astype(np.float32)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(img.dtype, np.floating):
        out = img.astype(np.float32, copy=False)
        if not np.all(np.isfinite(out)):
            raise InputError(f"{what} contain NaN or inf; expected finite values in [0, 1]")
        lo, hi = float(out.min(initial=0.0)), float(out.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{what} have values in [{lo:g}, {hi:g}]; expected float images scaled "
                             f"to [0, 1] (or uint8 0..255, or bool)")
        return out
    raise InputError(f"{what} have dtype {img.dtype}; expected bool, uint8 (0..255) or float in [0, 1]")


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's nearest-neighbour source index for each output pixel.

    Pillow walks the source in float64 steps: ``x_0 = step / 2``, ``x_i = x_{i-1} + step`` with
    ``step = n_in / n_out``, and takes ``floor(x_i)``. The running sum matters: where the exact
    value ``(i + 0.5) * step`` is a whole number the sum can land just below it (e.g. 64 -> 28).
    """
    step = n_in / n_out
    pos = np.cumsum(np.r_[0.5 * step, np.full(n_out - 1, step)])
    return np.minimum(pos.astype(np.int64), n_in - 1)


def _resize_batch(x: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """Resize float32 ``[N, h, w]`` to ``[N, H, W]``."""
    n, h, w = x.shape
    H, W = size
    if (h, w) == (H, W):
        return x
    if method == "nearest":
        return x[:, nearest_indices(h, H)[:, None], nearest_indices(w, W)]
    from PIL import Image  # only needed for filters other than nearest

    flt = getattr(Image.Resampling, method.upper())
    return np.stack([np.asarray(Image.fromarray(im, mode="F").resize((W, H), flt), dtype=np.float32)
                     for im in x]).clip(0.0, 1.0)


def preprocess(images: np.ndarray | Iterable[np.ndarray], spec: Mapping[str, Any],
               ink: str = "high", what: str = "images") -> np.ndarray:
    """Raw images -> ``float32 [N, 1, H, W]`` as the spec says.

    ``images``: an array ``[N, h, w]`` or ``[N, 1, h, w]``, or a sequence of 2-D arrays
    (sizes may differ). ``ink``: ``"high"`` if strokes are bright in the input, ``"low"`` if dark.
    """
    if spec.get("channels", 1) != 1:
        raise InputError("only single-channel bundles are supported by this runtime")
    if spec["resize"] not in PILLOW_FILTERS:
        raise InputError(f"unknown resize filter {spec['resize']!r}; expected one of {PILLOW_FILTERS}")
    if ink not in ("high", "low"):
        raise InputError(f"ink must be 'high' (bright strokes) or 'low' (dark strokes), got {ink!r}")
    size = (int(spec["size"][0]), int(spec["size"][1]))
    if isinstance(images, np.ndarray):
        arr = images
        if arr.ndim == 4 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 3:
            raise InputError(f"{what} have shape {images.shape}; expected [N, H, W] or [N, 1, H, W] "
                             f"single-channel images (or a list of 2-D arrays)")
        groups = [arr]
    else:
        items = [np.asarray(im) for im in images]
        for i, im in enumerate(items):
            if im.ndim == 3 and im.shape[0] == 1:
                items[i] = im = im[0]
            if im.ndim != 2:
                raise InputError(f"{what}[{i}] has shape {im.shape}; expected a 2-D single-channel image")
        groups = [im[None] for im in items]
    if sum(g.shape[0] for g in groups) == 0:
        raise InputError(f"{what} are empty; expected at least one image")
    out = []
    for g in groups:
        h, w = g.shape[1:]
        if min(h, w) < MIN_SIDE or max(h, w) > MAX_ASPECT * min(h, w):
            raise InputError(f"{what} have size {h}x{w}; expected 2-D images at least {MIN_SIDE}x{MIN_SIDE} with "
                             f"an aspect ratio within {MAX_ASPECT}:1 (they are resized to {size[0]}x{size[1]}); "
                             f"a flattened or transposed array looks like this")
        x = _to_unit_float(g, what)
        x = _resize_batch(np.ascontiguousarray(x), size, spec["resize"])
        out.append(x)
    x = out[0] if len(out) == 1 else np.concatenate(out)
    if ink != spec.get("ink", "high"):
        x = 1.0 - x
    return np.ascontiguousarray(x[:, None], dtype=np.float32)
