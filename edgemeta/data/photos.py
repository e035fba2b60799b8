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

from edgemeta.contract.preprocess import preprocess_colour_uint8
from edgemeta.data.classes import ClassImages
from edgemeta.data.files import list_class_folders
from edgemeta.errors import InputError


def load_photo_folder(root: str | Path, size: tuple[int, int]) -> ClassImages:
    """``root/<class>/*`` -> :class:`ClassImages` with uint8 pixels ``[M, 3, H, W]`` (class = folder name)."""
    classes = list_class_folders(root)
    counts = np.array([len(files) for _, files in classes], dtype=np.int64)
    pixels = np.empty((int(counts.sum()), 3, *size), np.uint8)
    row = 0
    for name, files in classes:         # the runtime's own decoding and colour rule, a chunk of files at a time
        pixels[row:row + len(files)] = preprocess_colour_uint8(files, size, what=f"photos of class {name!r}")
        row += len(files)
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
