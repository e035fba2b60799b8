"""Unsupervised meta-training tasks: the sampler never reads labels, each class is one image whose
shots and queries are strong views of it, and a run's weights do not depend on the data's labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgemeta.data.classes import ClassImages
from edgemeta.data.unsupervised_tasks import UnlabelledTaskSampler, unsupervised_provenance
from edgemeta.errors import InputError
from edgemeta.train.trainer import TrainConfig, meta_train
from edgemeta.train.unsupervised_augment import glyph_views, photo_views, unsupervised_views

TINY_UNSUPERVISED = dict(device="cpu", split="lake", ways=6, shots=2, queries=1, max_episodes=12, val_every=6,
                         val_episodes=5, val_queries=5, unsupervised=True, seed=4)


@pytest.mark.parametrize("ways,shots,queries", [(5, 1, 1), (20, 3, 2), (2, 1, 5)])
def test_each_class_is_one_image_repeated_as_its_shots_and_queries(ways, shots, queries):
    s = UnlabelledTaskSampler(50, ways, shots, queries, seed=1)
    ys, yq = s.labels()
    assert ys.tolist() == [c for c in range(ways) for _ in range(shots)]
    assert yq.tolist() == [c for c in range(ways) for _ in range(queries)]
    for e in range(30):
        idx = s.indices(e)
        assert idx.classes.dtype == np.int64 and len(np.unique(idx.classes)) == ways
        assert idx.classes.min() >= 0 and idx.classes.max() < 50
        np.testing.assert_array_equal(idx.support, idx.classes[ys])
        np.testing.assert_array_equal(idx.query, idx.classes[yq])
    rows = s.batch_indices(7, 3)
    assert rows.shape == (3, ways * (shots + queries))
    np.testing.assert_array_equal(rows[1], np.concatenate([s.indices(8).support, s.indices(8).query]))


def test_tasks_are_reproducible_per_index_and_cover_the_pool():
    a, b = UnlabelledTaskSampler(40, 8, 1, 1, seed=3), UnlabelledTaskSampler(40, 8, 1, 1, seed=3)
    np.testing.assert_array_equal(a.indices(123).classes, b.indices(123).classes)     # no replay needed
    assert not np.array_equal(a.indices(0).classes, a.indices(1).classes)
    assert not np.array_equal(a.indices(0).classes, UnlabelledTaskSampler(40, 8, 1, 1, seed=4).indices(0).classes)
    seen = np.bincount(np.concatenate([a.indices(e).classes for e in range(500)]), minlength=40)
    assert seen.min() > 0                                 # every unlabelled image is drawn
    assert seen.max() < 3 * seen.mean()                   # roughly uniformly (mean 100 draws each)


def test_sampler_refuses_impossible_tasks():
    with pytest.raises(InputError, match="at least 10 unlabelled images; the pool has 9"):
        UnlabelledTaskSampler(9, 10, 1, 1)
    with pytest.raises(InputError, match="ways must be >= 2"):
        UnlabelledTaskSampler(9, 1, 1, 1)
    with pytest.raises(InputError, match="shots and queries must be >= 1"):
        UnlabelledTaskSampler(9, 2, 1, 0)


def test_provenance_says_no_labels_were_used():
    prov = unsupervised_provenance(1234)
    assert prov["labels_used"] == "none"
    assert "1234 unlabelled" in prov["meta_training_tasks"]
    assert "validation" in prov["checkpoint_selection"]


# ---------------------------------------------------------------------------------------- views
def _glyphs(n: int, seed: int = 0) -> torch.Tensor:
    """``[n, 1, 28, 28]`` random binary stroke drawings (a few lines each)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 28, 28), np.float32)
    for i in range(n):
        for _ in range(3):
            r, c, length = rng.integers(4, 20, 3)
            if rng.random() < 0.5:
                x[i, 0, r, c:c + length // 2 + 3] = 1.0
            else:
                x[i, 0, r:r + length // 2 + 3, c] = 1.0
    return torch.from_numpy(x)


def test_views_are_deterministic_in_range_and_differ_per_copy():
    x = _glyphs(8).repeat(4, 1, 1, 1)                    # 4 copies of each drawing
    gen = torch.Generator().manual_seed(0)
    v = glyph_views(x, gen)
    again = glyph_views(x, torch.Generator().manual_seed(0))
    assert v.shape == x.shape and v.dtype == torch.float32
    assert torch.equal(v, again)
    assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    copies = v.view(4, 8, -1)
    for i in range(4):
        for j in range(i + 1, 4):                        # no two views of a drawing are the same picture
            assert float((copies[i] - copies[j]).abs().sum(1).min()) > 1.0
    photos = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    pv = photo_views(photos, torch.Generator().manual_seed(2))
    assert pv.shape == photos.shape and float(pv.min()) >= 0.0 and float(pv.max()) <= 1.0
    assert torch.equal(unsupervised_views(photos, torch.Generator().manual_seed(2)), pv)


def test_views_make_raw_pixel_matching_fail_often(lake_val):
    """The task is not trivial: matching a view to the nearest original by raw pixels (what an identity
    embedding would do) is far from perfect on 20-image tasks of real Omniglot drawings."""
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(20):
        rows = rng.choice(lake_val.n_images, 20, replace=False)
        originals = torch.from_numpy(lake_val.batch(rows))
        queries = unsupervised_views(originals, gen)
        support = unsupervised_views(originals, gen)
        d = torch.cdist(queries.flatten(1), support.flatten(1))
        hits.append((d.argmin(1) == torch.arange(20)).float().mean().item())
    accuracy = float(np.mean(hits))
    print(f"raw-pixel 1-NN on 20-way unsupervised tasks: {100 * accuracy:.1f} %")
    assert 0.05 < accuracy < 0.75


# ------------------------------------------------------------------------------ labels are ignored
@pytest.fixture(scope="module")
def pool(lake_sets):
    """120 training images (6 classes x 20) and 10 validation classes."""
    train, val, _ = lake_sets
    return train.subset(np.arange(6)), val.subset(np.arange(10))


def _relabelled(data: ClassImages, counts: list[int], seed: int) -> ClassImages:
    """The same rows in the same order under other class labels: other names, other class sizes."""
    assert sum(counts) == data.n_images
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    names = tuple(f"shuffled{seed}-{i}" for i in np.random.default_rng(seed).permutation(len(counts)))
    return ClassImages(data.pixels, offsets, np.asarray(counts, np.int64), names, data.image_ids)


def _weights(tmp_path, name, train, val, **overrides) -> dict[str, np.ndarray]:
    cfg = TrainConfig(**{**TINY_UNSUPERVISED, **overrides})
    meta_train(cfg, train, val, tmp_path / name, progress=False, log=lambda s: None)
    with np.load(tmp_path / name / "best.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_relabelling_or_removing_labels_changes_nothing(tmp_path, pool):
    train, val = pool
    reference = _weights(tmp_path, "labelled", train, val)
    shuffled = _relabelled(train, [1, 7, 30, 2, 80], seed=1)             # other classes, other sizes
    no_labels = _relabelled(train, [train.n_images], seed=2)             # every image in one class
    for other in (_weights(tmp_path, "shuffled", shuffled, val), _weights(tmp_path, "unlabelled", no_labels, val)):
        assert other.keys() == reference.keys()
        for k in reference:
            np.testing.assert_array_equal(other[k], reference[k], err_msg=k)
    # and the run does learn from the images: another seed gives other weights
    other_seed = _weights(tmp_path, "seed5", train, val, seed=5)
    assert any(not np.array_equal(other_seed[k], reference[k]) for k in reference)


def test_supervised_run_on_relabelled_data_differs(tmp_path, pool):
    """The control for the test above: with labels in use, the same relabelling does change the run."""
    train, val = pool
    a = _weights(tmp_path, "sup", train, val, unsupervised=False, ways=3, shots=2, queries=1)
    b = _weights(tmp_path, "sup-shuffled", _relabelled(train, [20, 20, 40, 40], seed=1), val, unsupervised=False,
                 ways=3, shots=2, queries=1)
    assert any(not np.array_equal(a[k], b[k]) for k in a)


def test_unsupervised_refuses_label_based_pretraining(tmp_path, pool):
    train, val = pool
    with pytest.raises(InputError, match="no many-class pre-training"):
        meta_train(TrainConfig(**{**TINY_UNSUPERVISED, "pretrain_steps": 5}), train, val, tmp_path / "p",
                   progress=False, log=lambda s: None)
    with pytest.raises(InputError, match="needs episodes"):
        meta_train(TrainConfig(**{**TINY_UNSUPERVISED, "max_episodes": 0}), train, val, tmp_path / "q",
                   progress=False, log=lambda s: None)


def test_a_killed_run_records_the_episodes_it_did(tmp_path, pool):
    """A run that dies between checkpoints still says in run.json, and so in an exported bundle's
    provenance, how many meta-training episodes its last checkpoint saw."""
    from edgemeta.train.trainer import TrainHooks

    train, val = pool
    calls = []

    def die_at_second_validation(row):
        calls.append(row)
        if len(calls) == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        meta_train(TrainConfig(**TINY_UNSUPERVISED), train, val, tmp_path / "cut", progress=False,
                   log=lambda s: None, hooks=TrainHooks(on_validate=die_at_second_validation))
    record = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert record["stopped"] == "running (or killed)" and record["episodes"] == 6
