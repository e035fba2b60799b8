"""Meta-training tasks from unlabelled images (UMTRA, Khodadadeh et al. 2019), numpy only.

An unsupervised task draws ``ways`` distinct images from a pool of unlabelled images; each image
is its own class, and ``shots + queries`` copies of it are that class's support and query rows.
The trainer's augmentation (strong, see :func:`edgemeta.train.augment.unsupervised_augment`)
makes every copy a different view, so the task is to recognise an image from a distorted view.

The sampler sees only the NUMBER of images in the pool: class labels, names, offsets and counts of
the data are never read, so removing or shuffling them cannot change a task. Episode ``i`` of a
sampler with seed ``s`` is drawn from ``numpy.random.default_rng([s, i])`` (resumable, like
:class:`edgemeta.data.episodes.EpisodeSampler`, whose interface this sampler shares).
"""

from __future__ import annotations

import numpy as np

from edgemeta.data.episodes import EpisodeIndices
from edgemeta.errors import InputError

def unsupervised_provenance(n_images: int) -> dict[str, str]:
    """What ``run.json`` and the bundle's ``provenance`` record about an unsupervised run."""
    return {
        "labels_used": "none",
        "meta_training_tasks": f"UMTRA-style, from {n_images} unlabelled training images: each sampled image is "
                               f"its own class, strongly augmented copies are its shots and queries; the data's "
                               f"class labels are ignored",
        "checkpoint_selection": "labelled validation classes (disjoint from training and test classes)",
    }


class UnlabelledTaskSampler:
    """Draws ``ways``-way ``shots``-shot ``queries``-query tasks from ``n_images`` unlabelled rows.

    ``indices(e).support`` is int64 ``[ways * shots]`` and ``.query`` int64 ``[ways * queries]``,
    class-major: task class ``c`` is pool row ``classes[c]``, repeated ``shots`` (resp. ``queries``)
    times. The ``ways`` rows of one task are distinct.
    """

    def __init__(self, n_images: int, ways: int, shots: int, queries: int, seed: int = 0):
        if ways < 2:
            raise InputError(f"ways must be >= 2, got {ways}")
        if shots < 1 or queries < 1:
            raise InputError(f"shots and queries must be >= 1, got shots={shots}, queries={queries}")
        if n_images < ways:
            raise InputError(f"{ways}-way unsupervised tasks need at least {ways} unlabelled images; the pool has "
                             f"{n_images}")
        self.n_images, self.ways, self.shots, self.queries, self.seed = int(n_images), ways, shots, queries, seed

    def indices(self, episode: int) -> EpisodeIndices:
        """Task ``episode``: ``ways`` distinct pool rows, each repeated as its shots and queries."""
        rng = np.random.default_rng([self.seed, episode])
        rows = rng.choice(self.n_images, self.ways, replace=False).astype(np.int64)
        return EpisodeIndices(rows, np.repeat(rows, self.shots), np.repeat(rows, self.queries))

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Support labels ``[ways*shots]`` and query labels ``[ways*queries]`` (same for every task)."""
        return (np.repeat(np.arange(self.ways), self.shots), np.repeat(np.arange(self.ways), self.queries))

    def batch_indices(self, start: int, count: int) -> np.ndarray:
        """Support+query rows of ``count`` consecutive tasks: int64 ``[count, ways*(shots+queries)]``."""
        return np.stack([np.concatenate([i.support, i.query])
                         for i in (self.indices(start + e) for e in range(count))])
