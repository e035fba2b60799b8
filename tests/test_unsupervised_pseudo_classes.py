"""CACTUs-style pseudo-classes: k-means of an unsupervised run's embedding regroups the unlabelled pool;
labels are never read, and a supervised source run is refused."""

from __future__ import annotations

import numpy as np
import pytest

from edgemeta.data.classes import ClassImages
from edgemeta.data.unsupervised_tasks import kmeans, pseudo_classes, unsupervised_provenance
from edgemeta.errors import InputError
from edgemeta.train.trainer import TrainConfig, meta_train

TINY = dict(device="cpu", split="lake", ways=6, shots=1, queries=1, max_episodes=6, val_every=3, val_episodes=5,
            val_queries=5, unsupervised=True, seed=4)


def test_kmeans_recovers_separated_clusters_and_is_deterministic():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 5)) * 20
    truth = np.repeat(np.arange(12), 30)
    x = (centres[truth] + rng.normal(size=(360, 5))).astype(np.float32)
    a = kmeans(x, 12, seed=1)
    assert a.shape == (360,) and a.dtype == np.int64 and set(a.tolist()) == set(range(12))
    # each found cluster is exactly one true cluster (a bijection)
    pairs = set(zip(a.tolist(), truth.tolist()))
    assert len(pairs) == 12
    np.testing.assert_array_equal(a, kmeans(x, 12, seed=1))
    with pytest.raises(InputError, match="2 <= k <= M"):
        kmeans(x, 361)


def test_kmeans_leaves_no_cluster_empty():
    x = np.zeros((50, 3), np.float32)
    x[:25] = 1.0                                  # only two distinct points for five clusters
    a = kmeans(x, 5, seed=0)
    assert np.bincount(a, minlength=5).min() >= 1


def test_pseudo_classes_regroup_rows_by_cluster_and_drop_singletons():
    pixels = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1).repeat(4, 2).repeat(4, 3) / 10
    pool = ClassImages.from_lists([pixels[:3], pixels[3:]], ["a", "b"], image_ids=np.arange(100, 110))
    groups = pseudo_classes(pool, np.array([2, 0, 2, 7, 0, 2, 5, 5, 0, 2]))
    assert groups.names == ("cluster-0", "cluster-2", "cluster-5")          # cluster 7 has one image
    assert groups.counts.tolist() == [3, 4, 2]
    assert groups.image_ids.tolist() == [101, 104, 108, 100, 102, 105, 109, 106, 107]
    np.testing.assert_array_equal(groups.pixels[:, 0, 0, 0] * 10, groups.image_ids - 100)
    with pytest.raises(InputError, match="one integer cluster index per image"):
        pseudo_classes(pool, np.zeros(9, np.int64))
    with pytest.raises(InputError, match="one integer cluster index per image"):
        pseudo_classes(pool, np.zeros(10, np.float32))


def test_provenance_names_the_source_run():
    prov = unsupervised_provenance(500, "runs/umtra", 40)
    assert prov["labels_used"] == "none" and "CACTUs-style" in prov["meta_training_tasks"]
    assert "40 k-means pseudo-classes" in prov["meta_training_tasks"] and "runs/umtra" in prov["meta_training_tasks"]


@pytest.fixture(scope="module")
def pool(lake_sets):
    train, val, _ = lake_sets
    return train.subset(np.arange(8)), val.subset(np.arange(10))


def _weights(run) -> dict[str, np.ndarray]:
    with np.load(run / "best.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_pseudo_class_run_ignores_labels_and_needs_an_unsupervised_source(tmp_path, pool):
    train, val = pool
    quiet = dict(progress=False, log=lambda s: None)
    meta_train(TrainConfig(**TINY), train, val, tmp_path / "umtra", **quiet)
    cfg = TrainConfig(**{**TINY, "cluster_from": str(tmp_path / "umtra"), "clusters": 20})
    rec = meta_train(cfg, train, val, tmp_path / "cactus", **quiet)
    assert rec["config"]["cluster_from"] == str(tmp_path / "umtra")
    relabelled = ClassImages(train.pixels, np.array([0, 100], np.int64), np.array([100, 60], np.int64),
                             ("x", "y"), train.image_ids)
    meta_train(cfg, relabelled, val, tmp_path / "cactus-relabelled", **quiet)
    a, b = _weights(tmp_path / "cactus"), _weights(tmp_path / "cactus-relabelled")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    meta_train(TrainConfig(**{**TINY, "unsupervised": False}), train, val, tmp_path / "supervised", **quiet)
    with pytest.raises(InputError, match="meta-trained with labels"):
        meta_train(TrainConfig(**{**TINY, "cluster_from": str(tmp_path / "supervised"), "clusters": 20}), train, val,
                   tmp_path / "bad", **quiet)
    with pytest.raises(InputError, match="add --unsupervised"):
        meta_train(TrainConfig(**{**TINY, "unsupervised": False, "cluster_from": str(tmp_path / "umtra"),
                                  "clusters": 20}), train, val, tmp_path / "bad2", **quiet)
    with pytest.raises(InputError, match="--cluster-from"):
        meta_train(TrainConfig(**{**TINY, "cluster_from": str(tmp_path / "nothing"), "clusters": 20}), train, val,
                   tmp_path / "bad3", **quiet)
