"""CACTUs-style pseudo-classes (Hsu et al. 2019): the unlabelled pool clustered in the embedding of an
earlier unsupervised run, each cluster a class of the next run's meta-training episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgemeta.data.classes import ClassImages
from edgemeta.data.unsupervised_tasks import kmeans, pseudo_classes
from edgemeta.errors import InputError


def cluster_pool(pool: ClassImages, run_dir: str | Path, clusters: int, seed: int) -> ClassImages:
    """``pool``'s images grouped into ``clusters`` k-means clusters of their embeddings under the best
    weights of ``run_dir`` (an ``edgemeta train --unsupervised`` run, so no label enters); clusters of
    one image are left out. Deterministic given the run's weights and ``seed``."""
    from edgemeta.train.export import load_run  # export imports the trainer
    from edgemeta.train.trainer import embed_all

    try:
        model, record = load_run(run_dir)
    except FileNotFoundError as exc:
        raise InputError(f"--cluster-from: {exc}") from None
    if not record["config"].get("unsupervised"):
        raise InputError(f"--cluster-from {run_dir}: that run was meta-trained with labels; pseudo-classes must come "
                         f"from an unsupervised run (edgemeta train --unsupervised)")
    if not 2 <= clusters <= pool.n_images:
        raise InputError(f"--clusters must be between 2 and the {pool.n_images} unlabelled images, got {clusters}")
    z = embed_all(model, pool, torch.device("cpu")).numpy().astype(np.float32)
    return pseudo_classes(pool, kmeans(z, clusters, seed))
