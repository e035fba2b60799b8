"""User datasets: class-grouped ``.npz`` files and image folders (``root/<class>/*.png``).

``.npz`` layout (the layout of ``../shared/data/omniglot``): ``images`` ``[n_classes, n_per_class, H, W]``
as bool, uint8 0..255, uint8 0/1 (binary, 1 = ink) or float in [0, 1]; optional ``names`` (str
``[n_classes]``). Loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgemeta.contract.preprocess import MAX_PIXELS, check_ink, dark_on_bright, grey_image, preprocess
from edgemeta.errors import InputError
from edgemeta.data.classes import ClassImages

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm")


def _unit_images(x: np.ndarray) -> np.ndarray:
    """uint8 arrays holding only 0/1 are binary masks (1 = ink), not 0..255 grey levels."""
    if x.dtype == np.uint8 and x.size and int(x.max()) <= 1:
        return x.astype(bool)
    return x


def load_class_npz(path: str | Path, spec: Mapping[str, Any], ink: str = "high") -> ClassImages:
    """Read a class-grouped ``.npz`` and preprocess it to the spec's input size."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        if "images" not in z.files:
            raise InputError(f"{path}: no 'images' array; expected images [n_classes, n_per_class, H, W]")
        x = z["images"]
        names = [str(n) for n in z["names"]] if "names" in z.files else [f"class{i:05d}" for i in range(len(x))]
    if x.ndim != 4:
        raise InputError(f"{path}: images have shape {x.shape}; expected [n_classes, n_per_class, H, W]")
    n, per = x.shape[:2]
    flat = preprocess(_unit_images(x.reshape(n * per, *x.shape[2:])), spec, ink=ink, what=f"{path} images")
    return ClassImages.from_grouped(flat.reshape(n, per, *flat.shape[1:]), names)


def read_image_file(path: Path) -> np.ndarray:
    """One image file as its native array: ``bool [H, W]`` (1-bit), ``uint8 [H, W]`` (grey),
    ``uint8 [H, W, 3|4]`` (RGB / RGBA, turned grey by the runtime's colour rule) or float32 in [0, 1]
    (16-bit grey). Every failure (missing, a folder, unreadable, empty, truncated, not an image, more than
    ``MAX_PIXELS``) is an InputError naming the file; the size is checked before any pixel is decoded."""
    import warnings

    from PIL import Image

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise InputError(f"{path} is {w}x{h} ({w * h / 1e6:.0f} megapixels); expected at most "
                                     f"{MAX_PIXELS // 1_000_000} megapixels per image: downscale it first")
                im.load()
                return _native_array(im)
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError) as exc:
        expected = f"expected an image file ({', '.join(IMAGE_SUFFIXES)})"
        if isinstance(exc, FileNotFoundError):
            raise InputError(f"{path}: no such file or folder; {expected}") from None
        if isinstance(exc, IsADirectoryError):
            raise InputError(f"{path} is a folder; {expected}") from None
        if isinstance(exc, PermissionError):
            raise InputError(f"{path}: permission denied; {expected}") from None
        if isinstance(exc, Image.UnidentifiedImageError):
            raise InputError(f"{path} is not an image Pillow can read; {expected}") from None
        raise InputError(f"{path} cannot be read as an image ({type(exc).__name__}: {exc}); {expected}") from None


def _native_array(im: Any) -> np.ndarray:
    """A decoded Pillow image -> the array the runtime's input rules take (see :func:`read_image_file`)."""
    if im.mode in ("1", "L", "RGB", "RGBA"):
        return np.asarray(im)
    if im.mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32) / np.float32(65535.0)
    if im.mode in ("LA", "PA", "P", "RGBa", "La") or "transparency" in im.info:
        return np.asarray(im.convert("RGBA"))
    if im.mode in ("I", "F"):
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def resolve_ink(images: list[np.ndarray], ink: str) -> str:
    """``auto`` -> ``low`` if every image is dark ink on bright paper, ``high`` if none is, else ``auto``
    (left to the runtime image by image); the rule is :func:`~edgemeta.contract.preprocess.dark_on_bright`,
    the one the runtime applies. ``high`` / ``low`` are returned as given."""
    if check_ink(ink) != "auto":
        return ink
    dark = [bool(dark_on_bright(grey_image(im)[None])[0]) for im in images]
    return "low" if all(dark) else "high" if not any(dark) else "auto"


def list_class_folders(root: str | Path) -> list[tuple[str, list[Path]]]:
    """``[(class name, sorted image paths)]`` for every sub-folder of ``root`` holding images."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; expected root/<class>/<image files>")
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out.append((d.name, files))
    if not out:
        raise InputError(f"{root} holds no class folders with images ({', '.join(IMAGE_SUFFIXES)})")
    return out


def load_image_folder(root: str | Path, spec: Mapping[str, Any], ink: str = "auto") -> ClassImages:
    """Read ``root/<class>/*.png`` (any count per class) and preprocess to the spec; ``ink="auto"``
    decides the polarity image by image (the runtime's rule)."""
    classes = list_class_folders(root)
    raw = [[read_image_file(f) for f in files] for _, files in classes]
    per_class = [preprocess(group, spec, ink=ink, what=f"images of class {name!r}")
                 for (name, _), group in zip(classes, raw)]
    return ClassImages.from_lists(per_class, [name for name, _ in classes])


def load_dataset(path: str | Path, spec: Mapping[str, Any], ink: str = "auto") -> ClassImages:
    """A ``.npz`` file or an image folder, whichever ``path`` is."""
    path = Path(path)
    if path.suffix == ".npz":
        return load_class_npz(path, spec, ink="high" if ink == "auto" else ink)
    return load_image_folder(path, spec, ink=ink)


def split_classes(data: ClassImages, val_fraction: float, seed: int) -> tuple[ClassImages, ClassImages]:
    """Split by class (never by image) into meta-training and validation sets."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(data.n_classes)
    n_val = max(2, int(round(val_fraction * data.n_classes)))
    return data.subset(np.sort(perm[n_val:])), data.subset(np.sort(perm[:n_val]))
