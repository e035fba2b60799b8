"""Colour photo datasets: class folders ``root/<class>/*.jpg`` stored as uint8 ``[M, 3, H, W]``.

Every photo goes through the device's colour preprocessing (uint8 RGB, centre crop to the target
aspect, integer box resize; ``docs/bundle-format.md``) and is stored as those uint8 values, so
``ClassImages.batch`` gives the runtime's float32 input ``v / 255`` bit for bit. Images are decoded
one at a time into one preallocated array: memory is the uint8 set (38,400 mini-ImageNet training
photos at 84x84: 813 MB) plus one decoded photo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgemeta.contract.preprocess import nearest_indices
from edgemeta.data.classes import ClassImages
from edgemeta.data.files import list_class_folders, read_image_file
from edgemeta.errors import InputError

SPLIT_FOLDERS = ("train", "val", "test")


def _rgb(image: np.ndarray) -> np.ndarray:
    """A decoded image (bool/uint8 grey, uint8 RGB/RGBA, float32 grey in [0, 1]) -> uint8 ``[h, w, 3]``;
    alpha is composited over white with ``(c*a + 255*(255-a) + 127) // 255``."""
    if image.dtype != np.uint8:
        if image.dtype == np.bool_:
            image = image.astype(np.uint8) * np.uint8(255)
        else:
            image = np.floor(image.astype(np.float64) * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        c, a = image[:, :, :3].astype(np.int32), image[:, :, 3:4].astype(np.int32)
        return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return image[:, :, :3]


def read_photo(path: Path) -> np.ndarray:
    """One image file -> uint8 RGB ``[h, w, 3]`` (the one place photo files are decoded for training)."""
    return _rgb(read_image_file(path))


def _axis_bins(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(starts, counts, down)`` of the source bins of each output index along one axis."""
    i = np.arange(n_out + 1, dtype=np.int64)
    if n_in >= n_out:
        edges = (i * n_in) // n_out
        return edges[:-1], np.diff(edges), True
    return nearest_indices(n_in, n_out), np.ones(n_out, np.int64), False


def _resize_axis(a: np.ndarray, n_out: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact int64 sums over each output bin along ``axis`` and the bins' pixel counts."""
    starts, counts, down = _axis_bins(a.shape[axis], n_out)
    if down:
        return np.add.reduceat(a, starts, axis=axis, dtype=np.int64), counts
    return np.take(a, starts, axis=axis).astype(np.int64), counts


def photo_pixels(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB ``[h, w, 3]`` -> uint8 ``[3, H, W]``: centre crop to ``H:W`` then box-average each
    output pixel's integer source bin, ``(S + C//2) // C`` (the device's colour rule before ``/ 255``)."""
    H, W = size
    h, w = rgb.shape[:2]
    if w * H > h * W:
        ch, cw = h, (h * W) // H
    else:
        ch, cw = (w * H) // W, w
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = rgb[y0:y0 + ch, x0:x0 + cw]
    rows, cr = _resize_axis(crop, H, 0)                    # [H, cw, 3] int64
    sums, cc = _resize_axis(rows, W, 1)                    # [H, W, 3]
    c = (cr[:, None] * cc[None, :])[:, :, None]
    return ((sums + c // 2) // c).astype(np.uint8).transpose(2, 0, 1)


def load_photo_folder(root: str | Path, size: tuple[int, int]) -> ClassImages:
    """``root/<class>/*`` -> :class:`ClassImages` with uint8 pixels ``[M, 3, H, W]`` (class = folder name)."""
    classes = list_class_folders(root)
    counts = np.array([len(files) for _, files in classes], dtype=np.int64)
    pixels = np.empty((int(counts.sum()), 3, *size), np.uint8)
    row = 0
    for _, files in classes:
        for f in files:
            pixels[row] = photo_pixels(read_photo(f), size)
            row += 1
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return ClassImages(pixels, offsets, counts, tuple(name for name, _ in classes),
                       np.arange(len(pixels), dtype=np.int64))


def has_split_folders(root: str | Path) -> bool:
    """Whether ``root`` holds ``train/`` and ``val/`` class folders (a dataset split by class already)."""
    root = Path(root)
    return (root / "train").is_dir() and (root / "val").is_dir()


def is_colour_folder(root: str | Path) -> bool:
    """Whether the first image of ``root``'s first class is colour (RGB, RGBA, palette, CMYK ...)."""
    from PIL import Image

    first = list_class_folders(root)[0][1][0]
    try:
        with Image.open(first) as im:
            return im.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    except OSError:
        raise InputError(f"{first} is not an image Pillow can read; expected photos in {root}/<class>/") from None


def split_folder_sets(root: str | Path, size: tuple[int, int],
                      load: Any = None) -> tuple[ClassImages, ClassImages, dict[str, Any]]:
    """``root/train`` (meta-training) and ``root/val`` (validation) classes and their provenance.

    ``load(folder, size)`` reads one split (default: :func:`load_photo_folder`). The provenance names
    every train and val class, so evaluation can refuse them as test classes.
    """
    root = Path(root)
    load = load or load_photo_folder
    train, val = load(root / "train", size), load(root / "val", size)
    overlap = sorted(set(train.names) & set(val.names))
    if overlap:
        raise InputError(f"{root}: classes {overlap[:5]} are in both train/ and val/; expected disjoint class folders")
    prov = {"dataset": str(root), "split": "folders train/ val/ (test/ held out)", "channels": train.channels,
            "train_classes": train.n_classes, "val_classes": val.n_classes,
            "train_class_names": list(train.names), "val_class_names": list(val.names)}
    return train, val, prov
