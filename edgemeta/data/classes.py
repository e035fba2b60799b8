"""Class-grouped image sets (numpy only): the one in-memory layout every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemeta.contract.preprocess import unit_float
from edgemeta.errors import InputError

_ONE_F32_BITS = np.float32(1.0).view(np.uint32)


def compact_pixels(x: np.ndarray) -> np.ndarray:
    """Backbone input ``[M, C, H, W]`` in its smallest exact form.

    uint8 arrays (colour photos, 0..255 before the runtime's ``v / 255``) stay uint8; float32 arrays whose every value is exactly ``0.0`` or ``1.0`` (binary drawings) become bool
    (4x smaller; ``bool -> float32`` gives back the same bits); anything else stays float32.
    """
    if x.dtype in (np.bool_, np.uint8):
        return x
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    if x.size and bool(np.all((bits == 0) | (bits == _ONE_F32_BITS))):
        return bits.astype(bool)
    return x


@dataclass(frozen=True)
class ClassImages:
    """Preprocessed images grouped by class, stored flat so classes may hold different counts.

    pixels:    ``[M, C, H, W]`` (C = 1 grey, 3 RGB), already preprocessed (resized), stored compactly:
               bool for binary drawings (True = 1.0 = ink), uint8 for photos (v, input v / 255),
               float32 otherwise. :meth:`batch` turns rows into the
               backbone's float32 input; keep whole-set float copies out of memory.
    offsets:   int64 ``[n_classes]``, first row of each class in ``pixels``.
    counts:    int64 ``[n_classes]``, number of images of each class.
    names:     ``n_classes`` unique class names.
    image_ids: int64 ``[M]``, identity of the source drawing of each row (rotated copies share it),
               so tests can prove no drawing crosses between splits.
    """

    pixels: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    names: tuple[str, ...]
    image_ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.offsets.shape != (n,) or self.counts.shape != (n,):
            raise InputError(f"offsets/counts must have shape [{n}], got {self.offsets.shape}/{self.counts.shape}")
        if len(set(self.names)) != n:
            raise InputError(f"class names must be unique; got {n - len(set(self.names))} repeated")
        if self.pixels.ndim != 4 or self.pixels.shape[1] not in (1, 3):
            raise InputError(f"images must be [M, 1, H, W] or [M, 3, H, W], got {self.pixels.shape}")
        if self.pixels.dtype not in (np.bool_, np.uint8, np.float32):
            raise InputError(f"pixels must be bool, uint8 or float32, got {self.pixels.dtype}")
        if self.image_ids.shape != (self.pixels.shape[0],):
            raise InputError(f"image_ids must have one entry per image ({self.pixels.shape[0]}), got {self.image_ids.shape}")

    @property
    def n_classes(self) -> int:
        return len(self.names)

    @property
    def n_images(self) -> int:
        """M, the number of rows."""
        return int(self.pixels.shape[0])

    @property
    def channels(self) -> int:
        """C: 1 (grey) or 3 (RGB)."""
        return int(self.pixels.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.pixels.shape[2]), int(self.pixels.shape[3])

    def batch(self, rows: np.ndarray | slice | list[int]) -> np.ndarray:
        """The backbone's float32 input ``[n, C, H, W]`` for ``rows`` (indices or a slice) only."""
        return unit_float(self.pixels[rows])

    @property
    def images(self) -> np.ndarray:
        """float32 ``[M, C, H, W]`` of every row, built anew on each access (M x C x H x W x 4 bytes).

        For a few rows use :meth:`batch`, for the count :attr:`n_images`.
        """
        return self.batch(slice(None))

    def labels(self) -> np.ndarray:
        """int64 ``[M]``: the class index of every row."""
        return np.repeat(np.arange(self.n_classes), self.counts)

    @classmethod
    def from_grouped(cls, images: np.ndarray, names: list[str] | tuple[str, ...],
                     image_ids: np.ndarray | None = None) -> "ClassImages":
        """From a dense ``[n_classes, n_per_class, C, H, W]`` array (bool, uint8 or float32)."""
        n_classes, n_per = images.shape[:2]
        flat = compact_pixels(np.ascontiguousarray(images.reshape(n_classes * n_per, *images.shape[2:])))
        counts = np.full(n_classes, n_per, dtype=np.int64)
        offsets = np.arange(n_classes, dtype=np.int64) * n_per
        ids = np.arange(flat.shape[0], dtype=np.int64) if image_ids is None else image_ids.reshape(-1)
        return cls(flat, offsets, counts, tuple(names), ids.astype(np.int64))

    @classmethod
    def from_lists(cls, per_class: list[np.ndarray], names: list[str],
                   image_ids: np.ndarray | None = None) -> "ClassImages":
        """From one ``[n_i, C, H, W]`` array per class (counts may differ)."""
        counts = np.array([len(x) for x in per_class], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        flat = compact_pixels(np.ascontiguousarray(np.concatenate(per_class)))
        ids = np.arange(flat.shape[0], dtype=np.int64) if image_ids is None else image_ids
        return cls(flat, offsets, counts, tuple(names), ids.astype(np.int64))

    def subset(self, class_idx: np.ndarray | list[int]) -> "ClassImages":
        """The classes ``class_idx`` (in that order) as a new set."""
        class_idx = np.asarray(class_idx, dtype=np.int64)
        rows = np.concatenate([np.arange(o, o + c) for o, c in
                               zip(self.offsets[class_idx], self.counts[class_idx])]) if len(class_idx) else np.zeros(0, np.int64)
        counts = self.counts[class_idx].copy()
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return ClassImages(np.ascontiguousarray(self.pixels[rows]), offsets, counts,
                           tuple(self.names[i] for i in class_idx), self.image_ids[rows].copy())


def add_rotations(data: ClassImages, quarter_turns: tuple[int, ...] = (1, 2, 3)) -> ClassImages:
    """Add each class rotated by 90/180/270 degrees as a new class (Santoro et al. 2016).

    Rotated copies keep the ``image_ids`` of their source drawing and the compact pixel dtype
    (bool stays bool). Classes named ``name@rot90`` etc.
    """
    m, turns = data.n_images, (0, *quarter_turns)
    pixels = np.empty((len(turns) * m, *data.pixels.shape[1:]), data.pixels.dtype)   # filled in place: no copies
    for i, k in enumerate(turns):
        pixels[i * m:(i + 1) * m] = np.rot90(data.pixels, k, axes=(2, 3))
    names = list(data.names) + [f"{n}@rot{90 * k}" for k in quarter_turns for n in data.names]
    offsets = np.concatenate([data.offsets + i * m for i in range(len(turns))])
    counts = np.tile(data.counts, len(turns))
    return ClassImages(pixels, offsets, counts, tuple(names), np.tile(data.image_ids, len(turns)))
