"""Image files (paths or bytes) -> the arrays the runtime's input rules take: the one decoder.

:func:`decode_image` is used by the Python runtime (list items that are paths or bytes), the CLI
(``adapt`` / ``predict``) and the image-folder datasets, so a file gives the same array everywhere.

- EXIF orientation is honoured (``ImageOps.exif_transpose``).
- Modes: ``1`` -> bool ``[h, w]``; ``L`` -> uint8 ``[h, w]``; ``LA`` -> grey composited over white;
  ``P`` / ``PA`` -> ``convert("RGBA")``; ``RGBA`` -> composited over white (per channel, integers:
  ``c' = (c*a + 255*(255-a) + 127) // 255``); ``CMYK`` / ``YCbCr`` / ``LAB`` / ``HSV`` -> Pillow's
  ``convert("RGB")``; 16-bit (``I;16``, ``I;16B``, ``I``) -> ``v >> 8`` clipped to 0..255 as uint8;
  ``F`` (32-bit float) is refused.
- ``channels=3`` (colour bundles): grey files stay grey ``[h, w]`` (the runtime replicates them),
  the rest is uint8 RGB ``[h, w, 3]``. ``channels=1``: colour is turned grey here by the runtime's
  rule (:func:`~edgemeta.contract.preprocess.colour_to_grey`), so the result is always ``[h, w]``.
- For colour bundles (``channels=3``), JPEGs are decoded at reduced size (``draft``): the smallest
  DCT scale whose result is still at least ``target`` on both sides, so its centre crop still covers
  the target. The pixels then differ slightly from a full decode of the same file (DCT scaling is
  not the ``box_int`` rule): an app that needs bit-identical answers across runtimes passes pixels.
  Grey bundles decode JPEGs in full, as version-1 bundles always did (their ``nearest`` resize
  samples the full image).
- HEIC/HEIF and AVIF files (iPhone photos) are named as such, with what to do, instead of skipped.
- The pixel limit (``MAX_PIXELS``) is checked from the header, before any pixel is decoded.

Every failure is an :class:`~edgemeta.errors.InputError` naming the file (or ``image bytes #i``);
Pillow's warnings never leak to the caller.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgemeta.contract.input_checks import MAX_PIXELS
from edgemeta.contract.preprocess import colour_to_grey, over_white
from edgemeta.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
# Listed in folders too, so that they end in a clear error instead of being left out without a word.
UNREADABLE_PHOTO_SUFFIXES = (".heic", ".heif", ".avif")
LISTED_SUFFIXES = IMAGE_SUFFIXES + UNREADABLE_PHOTO_SUFFIXES
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
# Pillow plugins tried on a file: the formats of IMAGE_SUFFIXES (JPEG opens phones' multi-picture JPEGs
# as MPO too). Others (EPS runs Ghostscript, for one) are never tried.
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "PPM", "WEBP")
EXPECTED = f"expected an image file ({', '.join(IMAGE_SUFFIXES)})"
ORIENTATION_TAG = 0x0112
_SLICE = 1 << 20                 # pixels composited at a time (bounds the int32 temporaries)

ImageSource = str | os.PathLike | bytes | bytearray


def is_hidden(path: Path) -> bool:
    """A name starting with ``.``: ``.DS_Store``, macOS's ``._photo.jpg`` copies, ``.ipynb_checkpoints``.
    Never a user's sample, so folder listings leave it out (a path named explicitly is still read)."""
    return path.name.startswith(".")


def image_files_in(folder: Path) -> list[Path]:
    """The files of ``folder`` (not recursive) with a suffix of ``LISTED_SUFFIXES`` (any case), sorted;
    hidden names (:func:`is_hidden`) left out."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in LISTED_SUFFIXES and not is_hidden(p) and p.is_file())


def is_image_source(x: Any) -> bool:
    """True for what :func:`decode_image` reads: a path (``str`` / ``os.PathLike``) or encoded bytes."""
    return isinstance(x, (str, os.PathLike, bytes, bytearray))


def composite_over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 ``colour [h, w(, k)]`` with uint8 ``alpha [h, w]`` composited over white, in integers:
    ``(c*a + 255*(255-a) + 127) // 255`` per channel. Returns uint8 of ``colour``'s shape."""
    out = np.empty(colour.shape, np.uint8)
    flat_c = colour.reshape(alpha.size, -1)
    flat_a = alpha.reshape(-1)
    flat_o = out.reshape(alpha.size, -1)
    for i in range(0, alpha.size, _SLICE):
        flat_o[i:i + _SLICE] = over_white(flat_c[i:i + _SLICE].astype(np.int32),
                                          flat_a[i:i + _SLICE, None].astype(np.int32))
    return out


def pixels(im: Any) -> np.ndarray:
    """``np.asarray(im)`` without the transient copies: large images are copied a band of rows at a
    time, so the peak is the Pillow image plus the array (``np.asarray`` holds two more whole copies)."""
    width, height = im.size
    if width * height <= _SLICE:
        return np.asarray(im)
    first = np.asarray(im.crop((0, 0, width, 1)))
    out = np.empty((height, *first.shape[1:]), first.dtype)
    rows = max(1, _SLICE // width)
    for y in range(0, height, rows):
        out[y:y + rows] = np.asarray(im.crop((0, y, width, min(y + rows, height))))
    return out


def _sixteen_bit(a: np.ndarray) -> np.ndarray:
    """Integer pixels (16-bit, or Pillow's 32-bit ``I``) -> uint8 ``v >> 8`` clipped to 0..255."""
    if a.dtype.kind == "u" and a.dtype.itemsize <= 2:
        return (a >> 8).astype(np.uint8)
    return np.clip(a >> 8, 0, 255).astype(np.uint8)


def image_array(im: Any, channels: int, name: str) -> np.ndarray:
    """A loaded Pillow image -> bool / uint8 ``[h, w]`` or uint8 RGB ``[h, w, 3]`` (module docstring).

    Large images are converted a band of rows at a time (every rule is per pixel), so the peak is the
    Pillow image plus the result: a palette or RGBA image's RGBA copy and its int32 temporaries never
    exist whole (a 49-megapixel palette GIF took 590 MB instead of about 250)."""
    if im.mode == "F":
        raise InputError(f"{name} holds 32-bit float pixels (mode F); expected 1-bit, 8-bit or 16-bit images")
    width, height = im.size
    if width * height <= _SLICE:
        return _band_array(im, channels)
    rows = max(1, _SLICE // width)
    first = _band_array(im.crop((0, 0, width, min(rows, height))), channels)
    out = np.empty((height, *first.shape[1:]), first.dtype)
    out[:len(first)] = first
    for y in range(len(first), height, rows):
        out[y:y + rows] = _band_array(im.crop((0, y, width, min(y + rows, height))), channels)
    return out


def _band_array(im: Any, channels: int) -> np.ndarray:
    """:func:`image_array`'s per-pixel rules on one (small) Pillow image."""
    mode = im.mode
    if mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode in ("P", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
    elif mode.startswith("I"):
        return _sixteen_bit(pixels(im))
    elif mode not in ("1", "L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")                    # CMYK, YCbCr, LAB, HSV, RGBX, ...
    a = pixels(im)
    if im.mode == "LA":
        return composite_over_white(a[..., 0], a[..., 1])
    if channels == 1 and a.ndim == 3:
        return colour_to_grey(a)                  # composites RGBA over white by the same rule first
    if im.mode == "RGBA":
        return composite_over_white(a[..., :3], a[..., 3])
    return a


def _draft_size(im: Any, target: tuple[int, int]) -> tuple[int, int]:
    """``(w', h')`` to ask ``draft`` for: ``target`` (H, W) in the file's own axes (swapped when the EXIF
    orientation turns the picture by 90 degrees). The decoded size is then at least that on both sides,
    which is exactly when the centre crop to the target's aspect still covers the target."""
    height, width = int(target[0]), int(target[1])
    try:
        orientation = im.getexif().get(ORIENTATION_TAG, 1)
    except Exception:                             # noqa: BLE001 - damaged EXIF: decoded as is
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _pixel_limit(name: str, w: int, h: int) -> InputError:
    return InputError(f"{name} is {w}x{h} ({w * h / 1e6:.0f} megapixels); expected at most "
                      f"{MAX_PIXELS // 1_000_000} megapixels per image: downscale it first")


def _bomb(name: str, exc: BaseException) -> InputError:
    """Pillow refused the header as a decompression bomb (far above MAX_PIXELS)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"a {int(found.group(1)) / 1e6:.0f}-megapixel image" if found else "larger than the pixel limit"
    return InputError(f"{name} is {size}; expected at most {MAX_PIXELS // 1_000_000} megapixels per image: "
                      f"downscale it first")


def _decode_stream(fp: Any, name: str, target: tuple[int, int] | None, channels: int) -> np.ndarray:
    from PIL import (BmpImagePlugin, GifImagePlugin, Image, ImageOps, JpegImagePlugin,  # noqa: F401 - registers
                     PngImagePlugin, PpmImagePlugin, TiffImagePlugin, WebPImagePlugin)

    with Image.open(fp, formats=PILLOW_FORMATS) as im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise _pixel_limit(name, w, h)
        if target is not None and channels == 3 and im.format in ("JPEG", "MPO"):
            im.draft("RGB", _draft_size(im, target))
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        return image_array(im, channels, name)


def _open_file(path: Path, name: str) -> Any:
    """The file opened for reading; refuses folders, devices, pipes and empty files by name."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file or folder; {EXPECTED}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{name} is a symbolic link that leads back to itself (a loop); {EXPECTED}") from None
        raise
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{name} is a folder; {EXPECTED}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name} is not a regular file (a device, pipe or socket); {EXPECTED}")
    if st.st_size == 0:
        raise InputError(f"{name} is empty (0 bytes); {EXPECTED}")
    return open(path, "rb")


def _is_heif(source: ImageSource) -> bool:
    """Whether the file starts as an ISO-BMFF image does: ``....ftyp`` + a HEIF/AVIF brand."""
    try:
        if isinstance(source, (bytes, bytearray)):
            head = bytes(source[:12])
        else:
            with open(source, "rb") as f:
                head = f.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def decode_image(source: ImageSource, target: tuple[int, int] | None, channels: int,
                 name: str | None = None) -> np.ndarray:
    """One image file -> bool / uint8 grey ``[h, w]`` or uint8 RGB ``[h, w, 3]`` (see the module docstring).

    ``source``: a path or the file's bytes. ``target``: the bundle's ``(H, W)`` (JPEGs are decoded at
    the smallest size still covering it), or None for full size. ``channels``: the bundle's, 1 or 3.
    ``name``: what error messages call the image (default: the path, or ``image bytes``).
    """
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if isinstance(source, (bytes, bytearray)):
        name = name or "image bytes"
        if not source:
            raise InputError(f"{name} are empty (0 bytes); {EXPECTED}")
        opened: Any = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        opened = None
    else:
        raise InputError(f"{name or 'image'} is a {type(source).__name__}; expected a path or the bytes of an "
                         f"image file")
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if opened is None:
                opened = _open_file(Path(source), name)
            with opened:
                return _decode_stream(opened, name, target, channels)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(name, exc) from None
    except Image.UnidentifiedImageError:
        if _is_heif(source):
            raise InputError(f"{name} is a HEIC/HEIF or AVIF image (an iPhone photo), which this runtime cannot "
                             f"decode; convert it to JPEG or PNG first (iPhone: Settings > Camera > Formats > "
                             f"Most Compatible); {EXPECTED}") from None
        raise InputError(f"{name} is not an image Pillow can read; {EXPECTED}") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied; {EXPECTED}") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
            ZeroDivisionError) as exc:
        raise InputError(f"{name} cannot be read as an image ({type(exc).__name__}: {exc}); {EXPECTED}") from None


def read_image_file(path: str | os.PathLike, target: tuple[int, int] | None = None,
                    channels: int = 3) -> np.ndarray:
    """One image file at full size, grey or RGB as stored (:func:`decode_image` with ``channels=3``)."""
    return decode_image(path, target, channels)
