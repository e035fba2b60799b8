"""Omniglot and its two standard few-shot protocols (numpy only).

- ``vinyals`` (Vinyals et al. 2016; ProtoNets, MAML): ``char_id <= 1200`` for meta-training and
  validation, the other 423 characters for test. Validation is the 172 characters of the five
  alphabets ProtoNets' split lists use (Armenian, Bengali, Early_Aramaic, Hebrew, Mkhedruli).
- ``lake`` (Lake et al. 2015): meta-train on the 30 background alphabets, test on the 20
  evaluation alphabets. Validation holds out the same five alphabets (all are background ones).

Rotations by 90/180/270 degrees are added as extra classes to the meta-training part only.
Data is read from ``../shared/data/omniglot`` (beside the checkout) unless a path is given or
``EDGEMETA_OMNIGLOT`` is set. Images are 0/1 with 1 = ink, resized to 28x28 with ``nearest``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgemeta.contract.preprocess import default_spec, preprocess
from edgemeta.data.classes import ClassImages, add_rotations

SPLITS = ("vinyals", "lake")
PARTS = ("train", "val", "test")
VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_TRAIN_MAX_ID = 1200
FILES = ("background.npz", "evaluation.npz")


def default_root() -> Path:
    """Where Omniglot is looked for: ``$EDGEMETA_OMNIGLOT``, then ``../shared/data/omniglot``
    relative to the working directory and to this checkout."""
    env = os.environ.get("EDGEMETA_OMNIGLOT")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd().parent / "shared/data/omniglot",
                   Path(__file__).resolve().parents[3] / "shared/data/omniglot",
                   Path.cwd() / "shared/data/omniglot"]
    for c in candidates:
        if all((c / f).is_file() for f in FILES):
            return c
    raise FileNotFoundError(
        "Omniglot not found; looked in " + ", ".join(str(c) for c in candidates) +
        ". Pass --omniglot PATH (a folder with background.npz and evaluation.npz) "
        "or set EDGEMETA_OMNIGLOT.")


@functools.lru_cache(maxsize=4)
def _load_all(root: str, size: tuple[int, int]) -> dict[str, Any]:
    """Both Omniglot files concatenated, sorted by char_id, resized once: images ``[1623, 20, 1, H, W]``."""
    parts = [np.load(Path(root) / f, allow_pickle=False) for f in FILES]
    raw = np.concatenate([p["images"] for p in parts])           # uint8 0/1, 1 = ink
    spec = default_spec(size, "nearest")
    n, per = raw.shape[:2]
    flat = preprocess(raw.reshape(n * per, *raw.shape[2:]).astype(bool), spec)
    return {
        "images": flat.reshape(n, per, 1, *size),
        "alphabet": np.concatenate([p["alphabet"] for p in parts]).astype(str),
        "character": np.concatenate([p["character"] for p in parts]).astype(np.int64),
        "char_id": np.concatenate([p["char_id"] for p in parts]).astype(np.int64),
        "background": np.concatenate([np.full(len(p["char_id"]), i == 0) for i, p in enumerate(parts)]),
    }


def split_masks(char_id: np.ndarray, alphabet: np.ndarray, background: np.ndarray,
                split: str) -> dict[str, np.ndarray]:
    """Boolean character masks for train / val / test; they partition the used characters."""
    if split not in SPLITS:
        raise ValueError(f"unknown Omniglot split {split!r}; expected one of {SPLITS}")
    is_val = np.isin(alphabet, VAL_ALPHABETS)
    pool = char_id <= VINYALS_TRAIN_MAX_ID if split == "vinyals" else background
    return {"train": pool & ~is_val, "val": pool & is_val, "test": ~pool}


def load_omniglot(split: str = "vinyals", part: str = "train", root: str | Path | None = None,
                  size: tuple[int, int] = (28, 28), rotations: bool | None = None) -> ClassImages:
    """One part of an Omniglot protocol as :class:`ClassImages` (``rotations`` defaults to train only)."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
    root = Path(root) if root is not None else default_root()
    d = _load_all(str(root.resolve()), tuple(size))
    mask = split_masks(d["char_id"], d["alphabet"], d["background"], split)[part]
    sel = np.flatnonzero(mask)
    names = [f"{d['alphabet'][i]}/character{d['character'][i]:02d}" for i in sel]
    ids = d["char_id"][sel, None] * 100 + np.arange(d["images"].shape[1])[None]
    data = ClassImages.from_grouped(d["images"][sel], names, ids)
    if rotations if rotations is not None else part == "train":
        data = add_rotations(data)
    return data


def preprocess_spec(size: tuple[int, int] = (28, 28)) -> dict[str, Any]:
    """The ``preprocess`` entry a bundle trained on this data records."""
    return default_spec(size, "nearest")
