"""EpisodeSampler invariants: shapes, class-major labels, support/query disjointness, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from edgemeta.data.classes import ClassImages
from edgemeta.data.episodes import EpisodeSampler
from edgemeta.errors import InputError


def _tagged(counts: list[int]) -> ClassImages:
    """Classes with the given image counts; pixel [0, 0] of every row holds the row's own index."""
    per_class, start = [], 0
    for n in counts:
        x = np.zeros((n, 1, 4, 4), np.float32)
        x[:, 0, 0, 0] = np.arange(start, start + n)
        per_class.append(x)
        start += n
    return ClassImages.from_lists(per_class, [f"c{i}" for i in range(len(counts))])


@pytest.fixture(scope="module")
def omniglot_val(lake_val) -> ClassImages:
    return lake_val


@pytest.mark.parametrize("ways,shots,queries", [(5, 1, 15), (20, 1, 5), (5, 5, 5), (2, 19, 1)])
def test_shapes_and_class_counts(omniglot_val, ways, shots, queries):
    s = EpisodeSampler(omniglot_val, ways, shots, queries, seed=3)
    for e in range(10):
        idx = s.indices(e)
        assert idx.classes.shape == (ways,) and len(np.unique(idx.classes)) == ways
        assert idx.support.shape == (ways * shots,) and idx.query.shape == (ways * queries,)
        assert idx.support.dtype == np.int64 and idx.query.dtype == np.int64
        ep = s.episode(e)
        assert ep.support_x.shape == (ways * shots, 1, 28, 28)
        assert ep.query_x.shape == (ways * queries, 1, 28, 28)
        assert np.bincount(ep.support_y, minlength=ways).tolist() == [shots] * ways
        assert np.bincount(ep.query_y, minlength=ways).tolist() == [queries] * ways


@pytest.mark.parametrize("ways,shots,queries", [(5, 1, 15), (20, 5, 3)])
def test_labels_are_class_major_and_rows_belong_to_their_class(omniglot_val, ways, shots, queries):
    s = EpisodeSampler(omniglot_val, ways, shots, queries, seed=11)
    ys, yq = s.labels()
    assert ys.tolist() == [c for c in range(ways) for _ in range(shots)]
    assert yq.tolist() == [c for c in range(ways) for _ in range(queries)]
    row_class = omniglot_val.labels()
    for e in range(50):
        idx = s.indices(e)
        ep = s.episode(e)
        np.testing.assert_array_equal(row_class[idx.support], idx.classes[ys])
        np.testing.assert_array_equal(row_class[idx.query], idx.classes[yq])
        np.testing.assert_array_equal(ep.support_y, ys)
        np.testing.assert_array_equal(ep.query_y, yq)
        np.testing.assert_array_equal(ep.classes, idx.classes)
        # the images are really those rows
        np.testing.assert_array_equal(ep.support_x, omniglot_val.images[idx.support])
        np.testing.assert_array_equal(ep.query_x, omniglot_val.images[idx.query])
        assert ep.support_x.dtype == ep.query_x.dtype == np.float32


def test_support_and_query_are_disjoint_and_without_repeats(omniglot_val):
    s = EpisodeSampler(omniglot_val, 20, 5, 15, seed=0)   # 20 of 20 drawings used per class
    for e in range(50):
        idx = s.indices(e)
        rows = np.concatenate([idx.support, idx.query])
        assert len(np.unique(rows)) == len(rows)
        assert not set(idx.support.tolist()) & set(idx.query.tolist())
        # with shots + queries == 20 every drawing of every chosen class is used exactly once
        for c in idx.classes:
            lo, n = omniglot_val.offsets[c], omniglot_val.counts[c]
            assert ((rows >= lo) & (rows < lo + n)).sum() == n
        # and no two rows are the same source drawing
        assert len(np.unique(omniglot_val.image_ids[rows])) == len(rows)


def test_reproducible_per_episode_and_seed(omniglot_val):
    a = EpisodeSampler(omniglot_val, 5, 1, 15, seed=7)
    b = EpisodeSampler(omniglot_val, 5, 1, 15, seed=7)
    c = EpisodeSampler(omniglot_val, 5, 1, 15, seed=8)
    # episode i does not depend on which episodes were drawn before it
    later_first = b.indices(42)
    for e in range(40):
        a.indices(e)
    for e in (0, 1, 42, 999):
        ia, ib = a.indices(e), b.indices(e)
        for f in ("classes", "support", "query"):
            np.testing.assert_array_equal(getattr(ia, f), getattr(ib, f))
    np.testing.assert_array_equal(a.indices(42).support, later_first.support)
    np.testing.assert_array_equal(a.batch_indices(3, 4),
                                  np.stack([np.concatenate([a.indices(e).support, a.indices(e).query])
                                            for e in range(3, 7)]))
    # another seed, or another episode, gives other episodes
    assert sum(not np.array_equal(a.indices(e).support, c.indices(e).support) for e in range(20)) >= 19
    assert sum(not np.array_equal(a.indices(e).support, a.indices(e + 1).support) for e in range(20)) >= 19


def test_variable_class_sizes_never_draw_beyond_a_class():
    counts = [3, 4, 5, 6, 7, 9, 2, 1, 12, 4, 5, 30]
    data = _tagged(counts)
    assert data.offsets.tolist() == np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
    s = EpisodeSampler(data, 4, 2, 2, seed=5)          # needs >= 4 images: classes 1..5, 8..11
    eligible = {i for i, n in enumerate(counts) if n >= 4}
    assert set(s.eligible.tolist()) == eligible
    row_class = data.labels()
    ys, yq = s.labels()
    seen_rows: set[int] = set()
    seen_classes: set[int] = set()
    for e in range(500):
        idx = s.indices(e)
        assert set(idx.classes.tolist()) <= eligible
        rows = np.concatenate([idx.support, idx.query])
        assert len(np.unique(rows)) == len(rows)
        lo = data.offsets[idx.classes]
        hi = lo + data.counts[idx.classes]
        for rows_of, y in ((idx.support, ys), (idx.query, yq)):
            assert np.all(rows_of >= lo[y]) and np.all(rows_of < hi[y])
            np.testing.assert_array_equal(row_class[rows_of], idx.classes[y])
        ep = s.episode(e)
        np.testing.assert_array_equal(ep.support_x[:, 0, 0, 0], idx.support)   # the tagged rows
        seen_rows.update(rows.tolist())
        seen_classes.update(idx.classes.tolist())
    assert seen_classes == eligible
    # every image of every eligible class is reachable, and nothing else is
    assert seen_rows == {r for c in eligible for r in range(data.offsets[c], data.offsets[c] + counts[c])}


def test_too_few_classes_or_images_is_an_error():
    data = _tagged([5, 5, 5, 2, 1])
    EpisodeSampler(data, 3, 1, 4)                                     # exactly enough
    with pytest.raises(InputError, match=r"need 4 classes .*5 images each; this set has 3"):
        EpisodeSampler(data, 4, 1, 4)
    with pytest.raises(InputError, match=r"this set has 0"):
        EpisodeSampler(data, 2, 3, 3)                                 # no class has 6 images
    with pytest.raises(InputError, match="ways must be >= 2"):
        EpisodeSampler(data, 1, 1, 1)
    with pytest.raises(InputError, match="shots and queries must be >= 1"):
        EpisodeSampler(data, 2, 0, 1)
    with pytest.raises(InputError, match="shots and queries must be >= 1"):
        EpisodeSampler(data, 2, 1, 0)


def test_class_images_validation_and_subset():
    data = _tagged([3, 5, 2])
    np.testing.assert_array_equal(data.labels(), [0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    sub = data.subset([2, 0])
    assert sub.names == ("c2", "c0") and sub.counts.tolist() == [2, 3] and sub.offsets.tolist() == [0, 2]
    np.testing.assert_array_equal(sub.images[:, 0, 0, 0], [8, 9, 0, 1, 2])
    np.testing.assert_array_equal(sub.image_ids, [8, 9, 0, 1, 2])
    with pytest.raises(InputError, match="unique"):
        ClassImages.from_lists([np.zeros((1, 1, 2, 2), np.float32)] * 2, ["a", "a"])
    with pytest.raises(InputError, match=r"\[M, 1, H, W\]"):
        ClassImages.from_lists([np.zeros((1, 2, 2), np.float32)], ["a"])
