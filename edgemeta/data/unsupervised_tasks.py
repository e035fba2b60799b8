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

from edgemeta.data.classes import ClassImages
from edgemeta.data.episodes import EpisodeIndices
from edgemeta.errors import InputError


def unsupervised_provenance(n_images: int, cluster_from: str | None = None, clusters: int = 0) -> dict[str, str]:
    """What ``run.json`` and the bundle's ``provenance`` record about an unsupervised run."""
    tasks = (f"UMTRA-style, from {n_images} unlabelled training images: each sampled image is its own class, "
             f"strongly augmented copies are its shots and queries; the data's class labels are ignored")
    if cluster_from:
        tasks = (f"CACTUs-style, from {n_images} unlabelled training images: {clusters} k-means pseudo-classes of "
                 f"their embeddings under the unsupervised run {cluster_from}, strongly augmented; the data's "
                 f"class labels are ignored")
    return {
        "labels_used": "none",
        "meta_training_tasks": tasks,
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


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` seed centres ``[k, D]``: each next one a row drawn with probability proportional to its
    squared distance to the nearest centre so far (a row already chosen, or a duplicate, has 0)."""
    centres = np.empty((k, x.shape[1]), np.float32)
    centres[0] = x[rng.integers(x.shape[0])]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for j in range(1, k):
        total = float(d2.sum())
        i = int(rng.choice(x.shape[0], p=d2 / total)) if total > 0 else int(rng.integers(x.shape[0]))
        centres[j] = x[i]
        np.minimum(d2, ((x - centres[j]) ** 2).sum(1), out=d2)
    return centres


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 25, chunk: int = 4096) -> np.ndarray:
    """Cluster index int64 ``[M]`` of each row of ``x`` float ``[M, D]`` into ``k`` clusters.

    Lloyd's algorithm on squared Euclidean distance, started by k-means++ seeding (Arthur and
    Vassilvitskii 2007); a cluster left empty is restarted at the row farthest from its centre.
    Deterministic given ``seed``. Memory: ``chunk x k`` distances at a time.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    m = x.shape[0]
    if x.ndim != 2 or not 2 <= k <= m:
        raise InputError(f"k-means needs [M, D] rows and 2 <= k <= M, got shape {x.shape} and k={k}")
    rng = np.random.default_rng(seed)
    centres = _kmeans_pp(x, k, rng)
    sq = (x * x).sum(1)
    assign = np.full(m, -1, np.int64)
    dist = np.empty(m, np.float32)
    for _ in range(iters):
        c_sq = (centres * centres).sum(1)
        new = np.empty(m, np.int64)
        for i in range(0, m, chunk):
            d = sq[i:i + chunk, None] - 2.0 * (x[i:i + chunk] @ centres.T) + c_sq[None, :]
            new[i:i + chunk] = d.argmin(1)
            dist[i:i + chunk] = d[np.arange(len(d)), new[i:i + chunk]]
        counts = np.bincount(new, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            far = np.argsort(-dist, kind="stable")[: len(empty)]
            new[far] = empty
            counts = np.bincount(new, minlength=k)
        if np.array_equal(new, assign):
            break
        assign = new
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        centres = sums / counts[:, None].astype(np.float32)
    return assign


def pseudo_classes(pool: ClassImages, clusters: np.ndarray, min_size: int = 2) -> ClassImages:
    """The pool's images regrouped into one class per cluster (``clusters``: int64 ``[M]``, one
    cluster index per row), named ``cluster-<index>``; clusters with fewer than ``min_size`` images
    are left out. Reads only ``pool.pixels`` and ``pool.image_ids``, never its labels."""
    clusters = np.asarray(clusters)
    if clusters.shape != (pool.n_images,) or clusters.dtype.kind not in "iu":
        raise InputError(f"one integer cluster index per image expected ({pool.n_images}), got "
                         f"{clusters.dtype} {clusters.shape}")
    order = np.argsort(clusters, kind="stable")
    ids, counts = np.unique(clusters[order], return_counts=True)
    keep = counts >= min_size
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows = np.concatenate([order[s:s + c] for s, c in zip(starts[keep], counts[keep])]) if keep.any() \
        else np.zeros(0, np.int64)
    kept = counts[keep].astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(kept)[:-1]]).astype(np.int64)
    return ClassImages(np.ascontiguousarray(pool.pixels[rows]), offsets, kept,
                       tuple(f"cluster-{i}" for i in ids[keep]), pool.image_ids[rows].copy())
