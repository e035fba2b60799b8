"""Class-grouped image sets (numpy only): the one in-memory layout every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassImages:
    """Preprocessed images grouped by class, stored flat so classes may hold different counts.

    images:    float32 ``[M, 1, H, W]``, already preprocessed (the backbone's input).
    offsets:   int64 ``[n_classes]``, first row of each class in ``images``.
    counts:    int64 ``[n_classes]``, number of images of each class.
    names:     ``n_classes`` unique class names.
    image_ids: int64 ``[M]``, identity of the source drawing of each row (rotated copies share it),
               so tests can prove no drawing crosses between splits.
    """

    images: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    names: tuple[str, ...]
    image_ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.offsets.shape != (n,) or self.counts.shape != (n,):
            raise ValueError(f"offsets/counts must have shape [{n}], got {self.offsets.shape}/{self.counts.shape}")
        if len(set(self.names)) != n:
            raise ValueError("class names must be unique")
        if self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"images must be [M, 1, H, W], got {self.images.shape}")
        if self.image_ids.shape != (self.images.shape[0],):
            raise ValueError("image_ids must have one entry per image")

    @property
    def n_classes(self) -> int:
        return len(self.names)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def labels(self) -> np.ndarray:
        """int64 ``[M]``: the class index of every row."""
        return np.repeat(np.arange(self.n_classes), self.counts)

    @classmethod
    def from_grouped(cls, images: np.ndarray, names: list[str] | tuple[str, ...],
                     image_ids: np.ndarray | None = None) -> "ClassImages":
        """From a dense ``[n_classes, n_per_class, 1, H, W]`` array."""
        n_classes, n_per = images.shape[:2]
        flat = np.ascontiguousarray(images.reshape(n_classes * n_per, *images.shape[2:]))
        counts = np.full(n_classes, n_per, dtype=np.int64)
        offsets = np.arange(n_classes, dtype=np.int64) * n_per
        ids = np.arange(flat.shape[0], dtype=np.int64) if image_ids is None else image_ids.reshape(-1)
        return cls(flat, offsets, counts, tuple(names), ids.astype(np.int64))

    @classmethod
    def from_lists(cls, per_class: list[np.ndarray], names: list[str],
                   image_ids: np.ndarray | None = None) -> "ClassImages":
        """From one ``[n_i, 1, H, W]`` array per class (counts may differ)."""
        counts = np.array([len(x) for x in per_class], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        flat = np.ascontiguousarray(np.concatenate(per_class))
        ids = np.arange(flat.shape[0], dtype=np.int64) if image_ids is None else image_ids
        return cls(flat, offsets, counts, tuple(names), ids.astype(np.int64))

    def subset(self, class_idx: np.ndarray | list[int]) -> "ClassImages":
        """The classes ``class_idx`` (in that order) as a new set."""
        class_idx = np.asarray(class_idx, dtype=np.int64)
        rows = np.concatenate([np.arange(o, o + c) for o, c in
                               zip(self.offsets[class_idx], self.counts[class_idx])]) if len(class_idx) else np.zeros(0, np.int64)
        counts = self.counts[class_idx].copy()
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return ClassImages(np.ascontiguousarray(self.images[rows]), offsets, counts,
                           tuple(self.names[i] for i in class_idx), self.image_ids[rows].copy())


def add_rotations(data: ClassImages, quarter_turns: tuple[int, ...] = (1, 2, 3)) -> ClassImages:
    """Add each class rotated by 90/180/270 degrees as a new class (Santoro et al. 2016).

    Rotated copies keep the ``image_ids`` of their source drawing. Classes named ``name@rot90`` etc.
    """
    images = [data.images] + [np.ascontiguousarray(np.rot90(data.images, k, axes=(2, 3)))
                              for k in quarter_turns]
    names = list(data.names) + [f"{n}@rot{90 * k}" for k in quarter_turns for n in data.names]
    m = data.images.shape[0]
    offsets = np.concatenate([data.offsets + i * m for i in range(len(images))])
    counts = np.tile(data.counts, len(images))
    return ClassImages(np.concatenate(images), offsets, counts, tuple(names),
                       np.tile(data.image_ids, len(images)))
