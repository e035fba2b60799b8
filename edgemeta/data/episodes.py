"""Seeded, vectorised N-way K-shot Q-query episode sampling (numpy only).

Episode ``i`` of a sampler with seed ``s`` is drawn from ``numpy.random.default_rng([s, i])``:
any episode can be reproduced on its own (resume, several workers) without replaying the others.
Support and query rows are disjoint within an episode; labels are ``0..ways-1`` in class order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemeta.data.classes import ClassImages
from edgemeta.errors import InputError


@dataclass(frozen=True)
class EpisodeIndices:
    """Row indices into a :class:`ClassImages` (its ``pixels``) for one episode.

    classes: int64 ``[ways]``; support: int64 ``[ways * shots]``; query: int64 ``[ways * queries]``,
    both class-major (label of row r is ``r // shots`` resp. ``r // queries``).
    """

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray


@dataclass(frozen=True)
class Episode:
    """support_x float32 ``[ways*shots, 1, H, W]``, support_y ``[ways*shots]``, query_x, query_y likewise."""

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    classes: np.ndarray


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes from the classes of one :class:`ClassImages`."""

    def __init__(self, data: ClassImages, ways: int, shots: int, queries: int, seed: int = 0):
        if ways < 2:
            raise InputError(f"ways must be >= 2, got {ways}")
        if shots < 1 or queries < 1:
            raise InputError(f"shots and queries must be >= 1, got shots={shots}, queries={queries}")
        self.data, self.ways, self.shots, self.queries, self.seed = data, ways, shots, queries, seed
        self.eligible = np.flatnonzero(data.counts >= shots + queries)
        if len(self.eligible) < ways:
            raise InputError(f"{ways}-way {shots}-shot {queries}-query episodes need {ways} classes with at "
                             f"least {shots + queries} images each; this set has {len(self.eligible)}")
        self._max_count = int(data.counts.max())

    def indices(self, episode: int) -> EpisodeIndices:
        rng = np.random.default_rng([self.seed, episode])
        classes = rng.choice(self.eligible, self.ways, replace=False)
        keys = rng.random((self.ways, self._max_count))
        keys[np.arange(self._max_count)[None, :] >= self.data.counts[classes][:, None]] = np.inf
        order = np.argsort(keys, axis=1)[:, : self.shots + self.queries]   # distinct rows per class
        rows = self.data.offsets[classes][:, None] + order
        return EpisodeIndices(classes, rows[:, : self.shots].reshape(-1), rows[:, self.shots:].reshape(-1))

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Support labels ``[ways*shots]`` and query labels ``[ways*queries]`` (same for every episode)."""
        return (np.repeat(np.arange(self.ways), self.shots), np.repeat(np.arange(self.ways), self.queries))

    def episode(self, episode: int) -> Episode:
        """Episode ``episode`` with float32 images (only its own rows are converted)."""
        idx = self.indices(episode)
        ys, yq = self.labels()
        return Episode(self.data.batch(idx.support), ys, self.data.batch(idx.query), yq, idx.classes)

    def batch_indices(self, start: int, count: int) -> np.ndarray:
        """Support+query rows of ``count`` consecutive episodes: int64 ``[count, ways*(shots+queries)]``."""
        return np.stack([np.concatenate([i.support, i.query])
                         for i in (self.indices(start + e) for e in range(count))])
