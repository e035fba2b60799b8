"""What raw images may be, checked before any pixel is converted (numpy only).

:mod:`edgemeta.contract.preprocess` converts only what passed these checks; every runtime entry point
goes through :func:`check_images` (shapes, dtypes, sizes; no pixel copied) and :func:`check_values`
(float values, chunk by chunk). ``docs/inputs.md`` states the same rules for every runtime:

- Shapes: an array ``[N, H, W]`` / ``[N, 1, H, W]`` (grey) or ``[N, H, W, 3|4]`` (RGB / RGBA), or
  a list of ``[H, W]`` / ``[1, H, W]`` / ``[H, W, 3|4]`` arrays of any sizes, or image files (paths or
  bytes, decoded by :mod:`edgemeta.contract.image_files` when their chunk is reached). Each image is at
  least ``MIN_SIDE`` pixels a side, within ``MAX_ASPECT``:1 (grey bundles) and at most ``MAX_PIXELS`` pixels.
- Values: ``bool`` (True = 1; grey images only), ``uint8`` 0..255 or float in [0, 1], finite.

Every refusal is an :class:`~edgemeta.errors.InputError` naming what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemeta.errors import InputError

MIN_SIDE = 4                 # smaller images carry no usable strokes
MAX_ASPECT = 4               # beyond this an "image" is almost always a flattened or mis-shaped array
                             # (grey bundles only: colour bundles centre-crop photos of any aspect)
MAX_PIXELS = 50_000_000      # per image (50 megapixels, e.g. 7071x7071); larger images are refused
SHAPES = ("[N, H, W] or [N, 1, H, W] grey, [N, H, W, 3] RGB or [N, H, W, 4] RGBA images, "
          "or a list of [H, W] / [H, W, 3] / [H, W, 4] arrays")
VALUES = "bool, uint8 (0..255) or float in [0, 1]"


def _kind(x: Any) -> str:
    return "None" if x is None else f"a {type(x).__name__}"


def _check_values_dtype(dtype: np.dtype, colour: bool, what: str) -> None:
    ok = dtype in (np.bool_, np.uint8) or np.issubdtype(dtype, np.floating)
    if colour and dtype == np.bool_:
        ok = False
    if not ok:
        if dtype == object:
            raise InputError(f"{what} have dtype object; expected {VALUES} (pass differently sized images "
                             f"as a list of 2-D arrays)")
        accepted = "uint8 (0..255) or float in [0, 1] for colour" if colour else VALUES
        raise InputError(f"{what} have dtype {dtype}; expected {accepted}")


def check_size(h: int, w: int, what: str, size: tuple[int, int] | None = None, crop: bool = False) -> None:
    """An image of ``h x w`` pixels is within the limits; ``size`` (the output size) is named in the error,
    ``crop`` (colour bundles) lifts the aspect limit."""
    if crop and min(h, w) < MIN_SIDE:
        raise InputError(f"{what} have size {h}x{w}; expected images at least {MIN_SIDE}x{MIN_SIDE}")
    if min(h, w) < MIN_SIDE or (not crop and max(h, w) > MAX_ASPECT * min(h, w)):
        to = f" (they are resized to {size[0]}x{size[1]})" if size else ""
        raise InputError(f"{what} have size {h}x{w}; expected 2-D images at least {MIN_SIDE}x{MIN_SIDE} with "
                         f"an aspect ratio within {MAX_ASPECT}:1{to}; a flattened or transposed array looks like this")
    if h * w > MAX_PIXELS:
        raise InputError(f"{what} have size {h}x{w} ({h * w / 1e6:.0f} megapixels); expected at most "
                         f"{MAX_PIXELS // 1_000_000} megapixels per image: downscale it first")


def _grey_or_colour(a: np.ndarray, batch: bool) -> tuple[np.ndarray, bool] | None:
    """``(array, is_colour)`` with grey as ``[.., H, W]`` and colour as ``[.., H, W, C]``; None if neither."""
    lead = 1 if batch else 0
    if a.ndim == lead + 2:
        return a, False
    if a.ndim == lead + 3:
        if a.shape[lead] == 1:
            return (a[:, 0] if batch else a[0]), False
        if a.shape[-1] in (3, 4):
            return a, True
    return None


def as_item(x: Any, where: str, decode: Callable[[Any, str], np.ndarray] | None = None) -> tuple[np.ndarray, bool]:
    """One list item -> ``(2-D grey or [H, W, C] colour array, is_colour)``: the one place where a list
    item becomes an array (every runtime entry point goes through it). An image file (a path or its
    bytes) is decoded by ``decode`` (:func:`edgemeta.contract.image_files.decode_image`) when given."""
    from edgemeta.contract.image_files import is_image_source

    if decode is not None and is_image_source(x):
        x = decode(x, where)
    elif x is None or isinstance(x, (str, bytes, bytearray, Mapping)):
        raise InputError(f"{where} is {_kind(x)}; expected a 2-D image array ([H, W], or [H, W, 3|4] colour)")
    try:
        a = np.asarray(x)
    except ValueError as exc:
        raise InputError(f"{where} is a ragged nested sequence ({exc}); expected a 2-D image array") from None
    got = _grey_or_colour(a, batch=False)
    if got is None:
        raise InputError(f"{where} has shape {a.shape}; expected a 2-D single-channel image [H, W] "
                         f"(or [H, W, 3] RGB, [H, W, 4] RGBA)")
    _check_values_dtype(got[0].dtype, got[1], where)
    return got


def _file_decoder(size: tuple[int, int] | None, crop: bool) -> Callable[[Any, str], np.ndarray]:
    """Image files (paths or bytes) -> arrays for a bundle of ``size`` (colour when ``crop``); a path is
    named by itself in errors, bytes as ``image bytes #i``."""
    from edgemeta.contract.image_files import decode_image

    def decode(source: Any, where: str) -> np.ndarray:
        name = None if not isinstance(source, (bytes, bytearray)) else \
            f"image bytes #{where[where.rfind('[') + 1:-1]}" if where.endswith("]") else "image bytes"
        return decode_image(source, size, 3 if crop else 1, name=name)
    return decode


def file_name(source: Any, where: str) -> str:
    """How errors name an image file: ``<where> (<path>)`` for a path, ``<where>`` for bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return where
    return f"{where} ({os.fspath(source)})"


@dataclass(frozen=True)
class CheckedImages:
    """Images whose shapes and dtypes passed the checks (values are checked chunk by chunk).

    Exactly one of ``batch`` (``[N, H, W]`` or ``[N, H, W, C]``) and ``items`` (a list) is set.
    """

    batch: np.ndarray | None
    items: list[np.ndarray] | None  # image files (paths / bytes) stay as given until their chunk is reached
    colour: np.ndarray              # bool: [1] for a batch, [N] for a list
    what: str
    decode: Callable[[Any, str], np.ndarray] | None = None
    crop: bool = False

    def __len__(self) -> int:
        return len(self.batch) if self.batch is not None else len(self.items)


def check_images(images: Any, what: str = "images", size: tuple[int, int] | None = None,
                 crop: bool = False) -> CheckedImages:
    """Check the shapes and dtypes of every image (no pixel is copied); raises InputError naming what
    was expected. Empty input is refused. ``size``: the output size, named in size errors; ``crop``:
    the images will be centre-cropped (colour bundles), so any aspect ratio is accepted."""
    if images is None or isinstance(images, (str, bytes, bytearray, memoryview, Mapping, set, frozenset)) \
            or np.isscalar(images) or isinstance(images, np.generic):
        raise InputError(f"{what} is {_kind(images)}; expected {SHAPES}")
    if not isinstance(images, (np.ndarray, list, tuple)):
        if hasattr(images, "__array__") or hasattr(images, "__array_interface__"):
            images = np.asarray(images)
        elif isinstance(images, Iterable):
            images = list(images)
        else:
            raise InputError(f"{what} is {_kind(images)}; expected {SHAPES}")
    if isinstance(images, np.ndarray):
        got = _grey_or_colour(images, batch=True)
        if got is None:
            hint = " (one image? pass [image] or image[None])" if images.ndim in (2, 3) else ""
            raise InputError(f"{what} have shape {images.shape}; expected {SHAPES}{hint}")
        arr, colour = got
        if len(arr) == 0:
            raise InputError(f"{what} are empty; expected at least one image")
        _check_values_dtype(arr.dtype, colour, what)
        check_size(arr.shape[1], arr.shape[2], what, size, crop)
        return CheckedImages(arr, None, np.array([colour]), what)
    if len(images) == 0:
        raise InputError(f"{what} are empty; expected at least one image")
    from edgemeta.contract.image_files import is_image_source

    items, colours = [], np.zeros(len(images), bool)
    for i, x in enumerate(images):
        if is_image_source(x):                  # decoded (and checked) when its chunk is reached
            items.append(x)
            continue
        a, colours[i] = as_item(x, f"{what}[{i}]")
        check_size(a.shape[0], a.shape[1], what if len(images) == 1 else f"{what}[{i}]", size, crop)
        items.append(a)
    return CheckedImages(None, items, colours, what, _file_decoder(size, crop), crop)



def check_values(g: np.ndarray, what: str, first: int | None = None) -> None:
    """Floats must be finite and in [0, 1] (min and max only: no copy of the images). ``first``: the
    list index of ``g[0]`` when ``g`` stacks list items (the message then names the bad item)."""
    if not np.issubdtype(g.dtype, np.floating):
        return
    lo, hi = float(g.min()), float(g.max())
    if first is not None and not (np.isfinite(lo) and np.isfinite(hi) and 0.0 <= lo and hi <= 1.0):
        for k in range(len(g)):
            check_values(g[k], f"{what}[{first + k}]")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"{what} contain NaN or inf; expected finite values in [0, 1]")
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{what} have values in [{lo:g}, {hi:g}]; expected float images scaled "
                         f"to [0, 1] (or uint8 0..255, or bool)")
