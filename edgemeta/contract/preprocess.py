"""Raw image -> backbone input, exactly as a bundle's ``preprocess`` says (numpy only).

This one module is used by the training data pipeline and by the device runtime, so the two can
never drift apart. The spec (stored in ``manifest.json`` under ``preprocess``) of a grey bundle::

    {"channels": 1, "size": [H, W], "resize": "nearest", "value_range": [0.0, 1.0], "ink": "high"}

and of a colour (photo) bundle, format version 2 (:func:`colour_spec`)::

    {"channels": 3, "channel_order": "RGB", "size": [H, W], "fit": "centre_crop", "resize": "box_int",
     "value_range": [0.0, 1.0], "normalization": "in_graph"}

Which images are accepted (shapes, dtypes, sizes, values) is checked first by
:mod:`edgemeta.contract.input_checks`; this module converts what passed (``docs/inputs.md`` states the
same rules for every runtime):

- Values: ``bool`` (True = 1), ``uint8`` 0..255 (v / 255) or float in [0, 1] as is.
- Colour -> grey: uint8 with Pillow's ``convert("L")`` rule in integers, after compositing alpha over
  white; float with ``0.299 R + 0.587 G + 0.114 B`` in float32 (:func:`colour_to_grey`).
- Ink polarity (``ink="auto"``, per image, before resizing): an image whose mean value is above 0.5
  is dark ink on bright paper and is inverted (:func:`dark_on_bright`). ``ink="high"`` / ``"low"``
  force bright / dark strokes for every image.
- ``resize``: a Pillow filter name. ``nearest`` samples the source pixels here with Pillow's own
  rule (:func:`nearest_indices`) and converts only the sampled pixels; other filters go through
  Pillow on the uint8 (``L``) or float (``F``) image.

Colour bundles (``channels`` 3) take the same inputs; each image becomes uint8 RGB (grey replicated,
alpha over white in integers, floats quantised ``floor(x*255 + 0.5)``: :func:`to_uint8`), is
centre-cropped to the target aspect and resized by ``box_int`` (:mod:`edgemeta.contract.resample`),
then ``v / 255`` as float32 ``[N, 3, H, W]``. ``ink`` has no effect and the aspect limit does not apply.

Work is done in chunks of ``CHUNK`` images (:func:`iter_preprocess`), so memory stays bounded by one
chunk whatever the number of images, and no float copy of a whole large image is ever made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from edgemeta.contract.input_checks import (CheckedImages, as_item, check_images, check_size, check_values,
                                            file_name)
from edgemeta.contract.resample import (
    SLAB_PIXELS,
    box_int_resize,
    centre_crop_box,
    nearest_indices,
)
from edgemeta.errors import InputError

CHUNK = 256                  # images preprocessed (and embedded) at a time
STACK_PIXELS = 1 << 22       # equal-shaped list items are stacked into one batch up to this many pixels
PILLOW_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
INK_SETTINGS = ("auto", "high", "low")

ImagesLike = np.ndarray | Iterable[np.ndarray]


def default_spec(size: Sequence[int] = (28, 28), resize: str = "nearest") -> dict[str, Any]:
    return {"channels": 1, "size": [int(size[0]), int(size[1])], "resize": resize,
            "value_range": [0.0, 1.0], "ink": "high"}


def colour_spec(size: Sequence[int] = (84, 84)) -> dict[str, Any]:
    """The ``preprocess`` of a colour bundle (format version 2) of output size ``(H, W)``."""
    return {"channels": 3, "channel_order": "RGB", "size": [int(size[0]), int(size[1])], "fit": "centre_crop",
            "resize": "box_int", "value_range": [0.0, 1.0], "normalization": "in_graph"}


def spec_channels(spec: Mapping[str, Any]) -> int:
    """1 for a grey spec, 3 for a colour one."""
    return 3 if spec.get("channels", 1) == 3 else 1


def check_ink(ink: Any) -> str:
    """``ink`` as given if it is one of :data:`INK_SETTINGS`; else an InputError naming them."""
    if not isinstance(ink, str) or ink not in INK_SETTINGS:
        raise InputError(f"ink must be 'auto' (decided per image), 'high' (bright strokes) or 'low' "
                         f"(dark strokes), got {ink!r}")
    return ink


def check_spec(spec: Mapping[str, Any]) -> tuple[int, int]:
    """The spec's output size ``(H, W)``; refuses specs this runtime cannot follow."""
    channels = spec.get("channels", 1)
    if channels == 3:
        want = {k: v for k, v in colour_spec(spec["size"]).items() if k not in ("size", "value_range")}
        got = {k: spec.get(k) for k in want}
        if got != want:
            raise InputError(f"colour preprocess {got} is not supported by this runtime; expected {want}")
        return int(spec["size"][0]), int(spec["size"][1])
    if channels != 1:
        raise InputError(f"preprocess.channels is {channels!r}; this runtime supports 1 (grey) and 3 (RGB)")
    if spec["resize"] not in PILLOW_FILTERS:
        raise InputError(f"unknown resize filter {spec['resize']!r}; expected one of {PILLOW_FILTERS}")
    return int(spec["size"][0]), int(spec["size"][1])


# ---------------------------------------------------------------------------- the per-image rules
def dark_on_bright(g: np.ndarray) -> np.ndarray:
    """The ink rule: ``bool [n]``, True where image ``g[i]`` (grey ``[n, h, w]``) has a mean above 0.5.

    Values count as mapped to [0, 1] (bool -> 0/1, uint8 -> v/255, float as is); the mean is exact for
    bool and uint8 (integer comparison ``2 * sum > 255 * count``) and float64 for floats.
    """
    count = g.shape[1] * g.shape[2]
    if g.dtype == np.bool_:
        return 2 * np.count_nonzero(g, axis=(1, 2)) > count
    if g.dtype == np.uint8:
        return 2 * g.sum(axis=(1, 2), dtype=np.uint64) > np.uint64(255 * count)
    return g.mean(axis=(1, 2), dtype=np.float64) > 0.5


def over_white(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Integer channels ``c [..., k]`` with alpha ``a [..., 1]`` (both 0..255, int32) composited over
    white: ``(c*a + 255*(255-a) + 127) // 255``. The one place this rule is computed (grey and colour
    conversion, and image files, use it)."""
    return (c * a + 255 * (255 - a) + 127) // 255


def colour_to_grey(c: np.ndarray) -> np.ndarray:
    """RGB / RGBA ``[..., 3|4]`` -> grey ``[...]`` (uint8 stays uint8, float becomes float32).

    uint8: alpha over white ``c' = (c*a + 255*(255-a) + 127) // 255``, then
    ``L = (19595 R + 38470 G + 7471 B + 32768) >> 16`` (Pillow's ``convert("L")``), in integers.
    float: ``c' = c*a + (1 - a)``, then ``L = 0.299 R + 0.587 G + 0.114 B`` in float32.
    Works through the pixels in slices, so temporaries stay small for large images.
    """
    shape, ch = c.shape[:-1], c.shape[-1]
    flat = c.reshape(-1, ch)
    is_u8 = c.dtype == np.uint8
    out = np.empty(flat.shape[0], np.uint8 if is_u8 else np.float32)
    step = 1 << 20
    for i in range(0, flat.shape[0], step):
        if is_u8:
            px = flat[i:i + step].astype(np.int32)
            rgb = px[:, :3]
            if ch == 4:
                rgb = over_white(rgb, px[:, 3:4])
            out[i:i + step] = (19595 * rgb[:, 0] + 38470 * rgb[:, 1] + 7471 * rgb[:, 2] + 32768) >> 16
        else:
            px = flat[i:i + step].astype(np.float32)
            rgb = px[:, :3]
            if ch == 4:
                a = px[:, 3:4]
                rgb = rgb * a + (np.float32(1.0) - a)
            lum = np.float32(0.299) * rgb[:, 0] + np.float32(0.587) * rgb[:, 1] + np.float32(0.114) * rgb[:, 2]
            out[i:i + step] = np.minimum(lum, np.float32(1.0))
    return out.reshape(shape)


def to_uint8(x: np.ndarray, colour: bool) -> np.ndarray:
    """Raw pixels ``[..., C]`` (colour) or ``[...]`` (grey) -> uint8 ``[..., K]``: RGB (``K = 3``) for colour,
    one channel (``K = 1``, replicated into R = G = B later) for grey. Values are checked already.

    uint8 RGB as is; uint8 RGBA over white ``c' = (c*a + 255*(255-a) + 127) // 255``; bool -> 0/255;
    float (float64): RGBA ``c' = c*a + (1 - a)``, then ``floor(x*255 + 0.5)``.
    """
    if not colour:
        if x.dtype == np.bool_:
            return (x.view(np.uint8) * np.uint8(255))[..., None]
        if x.dtype == np.uint8:
            return x[..., None]
        return _quantise(x.astype(np.float64))[..., None]
    if x.dtype == np.uint8:
        if x.shape[-1] == 3:
            return x
        return over_white(x[..., :3].astype(np.int32), x[..., 3:4].astype(np.int32)).astype(np.uint8)
    rgb = x[..., :3].astype(np.float64)
    if x.shape[-1] == 4:
        a = x[..., 3:4].astype(np.float64)
        rgb = rgb * a + (1.0 - a)
    return _quantise(rgb)


def _quantise(x: np.ndarray) -> np.ndarray:
    """float64 in [0, 1] -> uint8 ``floor(x*255 + 0.5)``."""
    return np.floor(x * 255.0 + 0.5).astype(np.uint8)


def grey_image(image: Any) -> np.ndarray:
    """One image ``[H, W]`` / ``[1, H, W]`` / ``[H, W, 3|4]`` -> grey ``[H, W]`` by :func:`colour_to_grey`."""
    a, colour = as_item(image, "image")
    return colour_to_grey(a) if colour else a



# ---------------------------------------------------------------------------- converting
def unit_float(x: np.ndarray) -> np.ndarray:
    """Pixels of any shape -> float32 in [0, 1], same shape: uint8 ``v`` -> ``float32(v) / float32(255)``
    (the colour rule's value, bit for bit), bool -> 0.0 / 1.0, float as float32 (always a new array)."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32)


def _resize_pillow(im: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """One grey image -> float32 ``[H, W]`` through Pillow: uint8 as ``L``, bool/float as ``F``."""
    from PIL import Image  # only needed for filters other than nearest

    flt = getattr(Image.Resampling, method.upper())
    if im.dtype == np.uint8:
        out = Image.fromarray(np.ascontiguousarray(im)).resize((size[1], size[0]), flt)
        return np.asarray(out, dtype=np.float32) / np.float32(255.0)
    out = Image.fromarray(np.ascontiguousarray(im, dtype=np.float32)).resize((size[1], size[0]), flt)
    return np.asarray(out, dtype=np.float32).clip(0.0, 1.0)


def colour_pixels(g: np.ndarray, colour: bool, size: tuple[int, int]) -> np.ndarray:
    """Same-shaped raw images ``[n, h, w(, C)]`` (values already checked) -> uint8 ``[n, 3, H, W]``:
    the integer result of the colour rule (uint8 RGB, centre crop, ``box_int``) before ``v / 255``."""
    n, h, w = g.shape[:3]
    out = np.empty((n, 3, *size), np.uint8)
    box = centre_crop_box(h, w, *size)
    crop = g[:, box.y0:box.y0 + box.h, box.x0:box.x0 + box.w]
    group = max(1, SLAB_PIXELS // (h * w))
    for i in range(0, n, group):                       # identity size: convert a group at a time
        u8 = to_uint8(crop[i:i + group], colour) if (h, w) == size else \
            box_int_resize(crop[i:i + group], size, lambda px: to_uint8(px, colour))
        out[i:i + group] = u8.transpose(0, 3, 1, 2)    # [g, H, W, K] -> [g, 3, H, W]; grey K = 1 -> R = G = B
    return out


def preprocess_colour_uint8(images: ImagesLike, size: Sequence[int], what: str = "images") -> np.ndarray:
    """Raw images -> uint8 ``[N, 3, H, W]`` by the colour rule, with every check of :func:`preprocess`;
    ``preprocess(images, colour_spec(size))`` is exactly this divided by 255 (what training stores)."""
    size = (int(size[0]), int(size[1]))
    checked = images if isinstance(images, CheckedImages) else check_images(images, what, size, crop=True)
    out = np.empty((len(checked), 3, *size), np.uint8)
    at = 0
    for g, colour, first in _chunks_of(checked, CHUNK):
        one = first is not None and len(checked) > 1 and len(g) == 1
        check_values(g, f"{checked.what}[{first}]" if one else checked.what,
                      first if first is not None and len(g) > 1 else None)
        out[at:at + len(g)] = colour_pixels(g, colour, size)
        at += len(g)
    return out


def _convert(g: np.ndarray, colour: bool, spec: Mapping[str, Any], size: tuple[int, int], ink: str,
             what: str, first: int | None) -> np.ndarray:
    """Same-shaped raw images ``[n, h, w(, C)]`` -> float32 ``[n, channels, H, W]``, ink applied (grey)."""
    check_values(g, what, first)
    if spec_channels(spec) == 3:
        return np.divide(colour_pixels(g, colour, size), np.float32(255.0), dtype=np.float32)
    if colour:
        g = colour_to_grey(g)
    target = spec.get("ink", "high")
    if ink == "auto":
        flip = dark_on_bright(g) if target == "high" else ~dark_on_bright(g)
    else:
        flip = np.full(len(g), ink != target)
    n, h, w = g.shape
    if (h, w) == size or spec["resize"] == "nearest":
        sampled = g if (h, w) == size else g[:, nearest_indices(h, size[0])[:, None], nearest_indices(w, size[1])]
        x = unit_float(sampled)
    else:
        x = np.stack([_resize_pillow(im, size, spec["resize"]) for im in g])
    if flip.any():                                     # x is always a fresh array here
        x[flip] = np.float32(1.0) - x[flip]
    return x[:, None]


def _chunks_of(checked: CheckedImages, chunk: int) -> Iterator[tuple[np.ndarray, bool, int | None]]:
    """``(raw same-shaped images [n, h, w(, C)], is_colour, list index of the first or None)``, n <= chunk."""
    if checked.batch is not None:
        for i in range(0, len(checked.batch), chunk):
            yield checked.batch[i:i + chunk], bool(checked.colour[0]), None
        return
    items = checked.items
    i = 0
    while i < len(items):
        a = items[i]
        if not isinstance(a, np.ndarray):       # an image file: decoded now, one at a time
            where = f"{checked.what}[{i}]"
            a, colour = as_item(a, where, checked.decode)
            check_size(a.shape[0], a.shape[1], file_name(items[i], where), None, checked.crop)
            yield a[None], colour, i
            i += 1
            continue
        j = i + 1
        budget = min(chunk, max(1, STACK_PIXELS // (a.shape[0] * a.shape[1])))
        while j < len(items) and j - i < budget and isinstance(items[j], np.ndarray) \
                and items[j].shape == a.shape and items[j].dtype == a.dtype:
            j += 1
        yield (a[None] if j == i + 1 else np.stack(items[i:j])), bool(checked.colour[i]), i
        i = j


def iter_preprocess(images: ImagesLike, spec: Mapping[str, Any], ink: str = "high", what: str = "images",
                    chunk: int = CHUNK) -> tuple[int, Iterator[np.ndarray]]:
    """``(N, chunks)``: every shape and dtype is checked now (unless ``images`` were checked already by
    :func:`check_images`, whose ``what`` then names them); the chunks (float32 ``[n, channels, H, W]``,
    n <= ``chunk``, in input order) are computed one at a time as they are taken. ``ink`` applies to
    grey bundles only (checked, and without effect, for colour ones)."""
    size = check_spec(spec)
    check_ink(ink)
    checked = images if isinstance(images, CheckedImages) else \
        check_images(images, what, size, crop=spec_channels(spec) == 3)
    what = checked.what

    def gen() -> Iterator[np.ndarray]:
        done: list[np.ndarray] = []
        held = 0
        for g, colour, first in _chunks_of(checked, chunk):
            one = first is not None and len(checked) > 1 and len(g) == 1
            stacked = first if first is not None and len(g) > 1 else None
            done.append(_convert(g, colour, spec, size, ink, f"{what}[{first}]" if one else what, stacked))
            held += len(done[-1])
            if held >= chunk:
                yield np.ascontiguousarray(np.concatenate(done))
                done, held = [], 0
        if done:
            yield np.ascontiguousarray(np.concatenate(done))

    return len(checked), gen()


def preprocess(images: ImagesLike, spec: Mapping[str, Any], ink: str = "high", what: str = "images") -> np.ndarray:
    """Raw images -> ``float32 [N, channels, H, W]`` as the spec says (all at once; see :func:`iter_preprocess`).

    ``ink`` (grey bundles): ``"high"`` if strokes are bright in the input, ``"low"`` if dark, ``"auto"``
    to decide per image by :func:`dark_on_bright`.
    """
    n, chunks = iter_preprocess(images, spec, ink, what)
    out = np.empty((n, spec_channels(spec), *check_spec(spec)), np.float32)
    at = 0
    for x in chunks:
        out[at:at + len(x)] = x
        at += len(x)
    return out
