"""Omniglot and its two standard few-shot protocols (numpy only).

- ``vinyals`` (Vinyals et al. 2016; ProtoNets, MAML): ``char_id <= 1200`` for meta-training and
  validation, the other 423 characters for test. Validation is the 172 characters of the five
  alphabets ProtoNets' split lists use (Armenian, Bengali, Early_Aramaic, Hebrew, Mkhedruli).
- ``lake`` (Lake et al. 2015): meta-train on the 30 background alphabets, test on the 20
  evaluation alphabets. Validation holds out the same five alphabets (all are background ones).

Rotations by 90/180/270 degrees are added as extra classes to the meta-training part only.
Data is read from ``../shared/data/omniglot`` (beside the checkout) unless a path is given or
``EDGEMETA_OMNIGLOT`` is set. Images are 0/1 with 1 = ink, resized to 28x28 with ``nearest`` while the files are
streamed, and kept as bool (see :class:`ClassImages`).
"""

from __future__ import annotations

import functools
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgemeta.contract.preprocess import default_spec, preprocess
from edgemeta.data.classes import ClassImages, add_rotations
from edgemeta.errors import DataNotFoundError, InputError

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
    candidates = list(dict.fromkeys(c.resolve() for c in candidates))    # each place once
    for c in candidates:
        if all((c / f).is_file() for f in FILES):
            return c
    raise DataNotFoundError(
        "Omniglot not found; looked in " + ", ".join(str(c) for c in candidates) +
        ". Pass --omniglot PATH (a folder with background.npz and evaluation.npz) "
        "or set EDGEMETA_OMNIGLOT.")


CHUNK_ROWS = 512      # 105x105 drawings decoded and resized at a time (about 23 MB as float32)


def _stream_rows(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """The ``images`` array of a class-grouped ``.npz`` as uint8 ``[<=chunk_rows, h, w]`` drawings, in
    order, decompressed as it is read so the whole file never sits in memory."""
    with zipfile.ZipFile(path) as zf:
        if "images.npy" not in zf.namelist():
            raise InputError(f"{path}: no 'images' array; expected uint8 images [n_characters, 20, 105, 105]")
        with zf.open("images.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            if len(shape) != 4 or fortran or dtype not in (np.dtype(np.uint8), np.dtype(np.bool_)):
                raise InputError(f"{path}: images are {dtype} {shape}; expected C-ordered uint8 0/1 "
                                 f"[n_characters, n_drawings, H, W]")
            rows, (h, w) = shape[0] * shape[1], shape[2:]
            for start in range(0, rows, chunk_rows):
                n = min(chunk_rows, rows - start)
                buf = f.read(n * h * w)
                if len(buf) != n * h * w:
                    raise InputError(f"{path}: images end after {start} of {rows} drawings; the file is truncated")
                yield np.frombuffer(buf, dtype=np.uint8).reshape(n, h, w)


def _resized_drawings(path: Path, size: tuple[int, int]) -> np.ndarray:
    """All drawings of one Omniglot file resized to ``size``: bool ``[n_characters, 20, 1, H, W]``.

    Each chunk goes through the runtime's own :func:`preprocess` (0/1 as bool, ``nearest``), so the
    values are those the device computes; only the resized result is kept, as bool.
    """
    spec = default_spec(size, "nearest")
    with np.load(path, allow_pickle=False) as z:
        n_chars = len(z["char_id"])
    out = [preprocess(raw.astype(bool), spec).astype(bool) for raw in _stream_rows(path)]
    flat = np.concatenate(out) if out else np.zeros((0, 1, *size), bool)
    if len(flat) % max(n_chars, 1):
        raise InputError(f"{path}: {len(flat)} drawings do not split evenly among {n_chars} characters")
    return flat.reshape(n_chars, -1, 1, *size)


@functools.lru_cache(maxsize=4)
def _load_all(root: str, size: tuple[int, int]) -> dict[str, Any]:
    """Both Omniglot files concatenated, sorted by char_id, resized once: bool images ``[1623, 20, 1, H, W]``.

    Only the compact bool result is cached (about 25 MB at 28x28), never a float copy.
    """
    files = [Path(root) / f for f in FILES]
    images = np.concatenate([_resized_drawings(f, size) for f in files])
    meta = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            meta.append({k: z[k] for k in ("alphabet", "character", "char_id")})
    return {
        "images": images,
        "alphabet": np.concatenate([m["alphabet"] for m in meta]).astype(str),
        "character": np.concatenate([m["character"] for m in meta]).astype(np.int64),
        "char_id": np.concatenate([m["char_id"] for m in meta]).astype(np.int64),
        "background": np.concatenate([np.full(len(m["char_id"]), i == 0) for i, m in enumerate(meta)]),
    }


def split_masks(char_id: np.ndarray, alphabet: np.ndarray, background: np.ndarray,
                split: str) -> dict[str, np.ndarray]:
    """Boolean character masks for train / val / test; they partition the used characters."""
    if split not in SPLITS:
        raise InputError(f"unknown Omniglot split {split!r}; expected one of {SPLITS}")
    is_val = np.isin(alphabet, VAL_ALPHABETS)
    pool = char_id <= VINYALS_TRAIN_MAX_ID if split == "vinyals" else background
    return {"train": pool & ~is_val, "val": pool & is_val, "test": ~pool}


def load_omniglot(split: str = "vinyals", part: str = "train", root: str | Path | None = None,
                  size: tuple[int, int] = (28, 28), rotations: bool | None = None) -> ClassImages:
    """One part of an Omniglot protocol as :class:`ClassImages` (``rotations`` defaults to train only)."""
    if part not in PARTS:
        raise InputError(f"unknown part {part!r}; expected one of {PARTS}")
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
