"""User datasets: class-grouped ``.npz`` files and image folders (``root/<class>/*.png``).

``.npz`` layout (the layout of ``../shared/data/omniglot``): ``images`` ``[n_classes, n_per_class, H, W]``
as bool, uint8 0..255, uint8 0/1 (binary, 1 = ink) or float in [0, 1]; optional ``names`` (str
``[n_classes]``). Loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edgemeta.contract.image_files import IMAGE_SUFFIXES, decode_image, image_files_in, is_hidden, read_image_file
from edgemeta.contract.preprocess import check_ink, dark_on_bright, grey_image, preprocess
from edgemeta.data.classes import ClassImages
from edgemeta.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "read_image_file", "load_class_npz", "load_image_folder", "load_dataset",
           "list_class_folders", "resolve_ink", "split_classes"]


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


def resolve_ink(images: Iterable[np.ndarray], ink: str) -> str:
    """``auto`` -> ``low`` if every image is dark ink on bright paper, ``high`` if none is, else ``auto``
    (left to the runtime image by image); the rule is :func:`~edgemeta.contract.preprocess.dark_on_bright`,
    the one the runtime applies. ``high`` / ``low`` are returned as given. ``images`` may be a generator
    (one image in memory at a time)."""
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
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p)):     # not .ipynb_checkpoints
        files = image_files_in(d)
        if files:
            out.append((d.name, files))
    if not out:
        direct = image_files_in(root)
        hint = (f"; its {len(direct)} image file(s) sit directly in it: put each class's images in a sub-folder "
                "named after the class (root/<class>/<image files>)" if direct else "")
        raise InputError(f"{root} holds no class folders with images ({', '.join(IMAGE_SUFFIXES)}){hint}")
    return out


def load_image_folder(root: str | Path, spec: Mapping[str, Any], ink: str = "auto") -> ClassImages:
    """Read ``root/<class>/*.png`` (any count per class; every suffix of ``IMAGE_SUFFIXES``, any case)
    through :func:`~edgemeta.contract.image_files.decode_image` and preprocess to the spec;
    ``ink="auto"`` decides the polarity image by image (the runtime's rule)."""
    classes = list_class_folders(root)
    target, channels = (int(spec["size"][0]), int(spec["size"][1])), int(spec.get("channels", 1))
    per_class = [preprocess([decode_image(f, target, channels) for f in files], spec, ink=ink,
                            what=f"images of class {name!r}")
                 for name, files in classes]             # one class's decoded files in memory at a time
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
