"""The two standard Omniglot protocols: disjoint characters, the documented sizes, rotations on train only."""

from __future__ import annotations

import numpy as np
import pytest

from edgemeta.contract.preprocess import default_spec
from edgemeta.data.omniglot import VAL_ALPHABETS, load_omniglot
from edgemeta.data.sources import evaluation_set
from edgemeta.errors import InputError

ALL_CHARS = set(range(1, 1624))


def chars(data) -> set[int]:
    return set((data.image_ids // 100).tolist())


@pytest.fixture(scope="module", params=["vinyals", "lake"])
def split(request, omniglot_root):
    """``(name, parts)``: every part without rotations, plus train with its default rotations."""
    name = request.param
    parts = {p: load_omniglot(name, p, omniglot_root, rotations=False) for p in ("train", "val", "test")}
    parts["train_rot"] = load_omniglot(name, "train", omniglot_root)
    return name, parts


def test_parts_are_disjoint_by_character_and_drawing(split):
    _, p = split
    tr, va, te = chars(p["train_rot"]), chars(p["val"]), chars(p["test"])
    assert not tr & va and not tr & te and not va & te
    assert tr | va | te == ALL_CHARS
    ids = {k: set(p[k].image_ids.tolist()) for k in ("train_rot", "val", "test")}
    assert not ids["train_rot"] & ids["test"] and not ids["train_rot"] & ids["val"] and not ids["val"] & ids["test"]
    for part in ("train", "val", "test"):
        d = p[part]
        assert d.counts.tolist() == [20] * d.n_classes
        # one character per class, 20 distinct drawings of it
        per_class = (d.image_ids // 100).reshape(d.n_classes, 20)
        assert np.all(per_class == per_class[:, :1])
        assert len(chars(d)) == d.n_classes
        assert len(np.unique(d.image_ids)) == len(d.image_ids)


def test_documented_sizes(split):
    name, p = split
    tr, va, te = chars(p["train"]), chars(p["val"]), chars(p["test"])
    if name == "vinyals":
        assert tr | va == set(range(1, 1201))
        assert (len(tr), len(va), len(te)) == (1028, 172, 423)
        assert te == set(range(1201, 1624))
    else:
        assert tr | va == set(range(1, 965))                    # the 30 background alphabets
        assert (len(tr), len(va), len(te)) == (792, 172, 659)
        assert te == set(range(965, 1624))                      # the 20 evaluation alphabets
    # validation = the five alphabets of ProtoNets' split lists, in both protocols
    assert {n.split("/")[0] for n in p["val"].names} == set(VAL_ALPHABETS)
    assert not {n.split("/")[0] for n in p["train"].names} & set(VAL_ALPHABETS)


def test_rotations_on_train_only(split):
    _, p = split
    base, rot = p["train"], p["train_rot"]
    assert rot.n_classes == 4 * base.n_classes
    assert len(chars(rot)) == base.n_classes
    n = base.n_classes
    for k, suffix in enumerate(["", "@rot90", "@rot180", "@rot270"]):
        assert rot.names[k * n:(k + 1) * n] == tuple(f"{c}{suffix}" for c in base.names)
    # class j rotated by k quarter turns is class k*n + j, same drawings (same image ids)
    for j in (0, n // 2, n - 1):
        a = base.pixels[base.offsets[j]:base.offsets[j] + 20]
        for k in (1, 2, 3):
            c = k * n + j
            b = rot.pixels[rot.offsets[c]:rot.offsets[c] + 20]
            np.testing.assert_array_equal(b, np.rot90(a, k, axes=(2, 3)))
            np.testing.assert_array_equal(rot.image_ids[rot.offsets[c]:rot.offsets[c] + 20],
                                          base.image_ids[base.offsets[j]:base.offsets[j] + 20])
    for part in ("val", "test"):
        default = load_omniglot(split[0], part)
        assert default.n_classes == p[part].n_classes
        assert not any("@rot" in x for x in default.names)


def test_pixels_match_the_readme_recipe(omniglot_root):
    """The loaded 28x28 images are the README's nearest-neighbour recipe applied to the raw drawings."""
    raw = np.load(omniglot_root / "evaluation.npz")
    X, char_id = raw["images"][:3], raw["char_id"][:3]
    idx = ((np.arange(28) + 0.5) * 105 / 28).astype(int)
    expect = X.reshape(-1, 105, 105).astype(np.float32)[:, idx[:, None], idx]
    test = load_omniglot("lake", "test", omniglot_root, rotations=False)
    assert test.image_ids[:60].tolist() == [int(c) * 100 + i for c in char_id for i in range(20)]
    np.testing.assert_array_equal(test.batch(slice(0, 60))[:, 0], expect)
    images = test.images
    assert images.dtype == np.float32 and set(np.unique(images).tolist()) == {0.0, 1.0}
    assert images.mean() < 0.5                                    # 1 = ink, strokes are the minority


def test_unknown_split_or_part(omniglot_root):
    with pytest.raises(InputError, match="vinyals"):
        load_omniglot("maml", "train", omniglot_root)
    with pytest.raises(InputError, match="train"):
        load_omniglot("lake", "holdout", omniglot_root)


def test_evaluation_set_refuses_characters_seen_in_training(omniglot_root):
    spec = default_spec((28, 28))
    vinyals_trained = {"dataset": "omniglot", "split": "vinyals"}
    lake_trained = {"dataset": "omniglot", "split": "lake"}
    # Lake's test alphabets include characters 965..1200, which Vinyals' training uses.
    with pytest.raises(InputError, match=r"characters this bundle was meta-trained on.*--split vinyals"):
        evaluation_set(vinyals_trained, spec, None, omniglot_root, split="lake")
    # Lake training never saw characters > 964, so Vinyals' test part (> 1200) is fair game.
    data, name = evaluation_set(lake_trained, spec, None, omniglot_root, split="vinyals", rotations=False)
    assert name == "omniglot/vinyals/test" and data.n_classes == 423
    assert min(chars(data)) == 1201
    # default: the bundle's own split
    data, name = evaluation_set(lake_trained, spec, None, omniglot_root)
    assert name == "omniglot/lake/test" and data.n_classes == 659
    # Vinyals' protocol as the literature measures it: each test character at 4 rotations is a class
    data, name = evaluation_set(vinyals_trained, spec, None, omniglot_root)
    assert name == "omniglot/vinyals/test+rotations" and data.n_classes == 4 * 423
    assert set(chars(data)) == set(chars(evaluation_set(vinyals_trained, spec, None, omniglot_root,
                                                        rotations=False)[0]))
    rot90 = data.names.index(data.names[0] + "@rot90")
    first = data.batch([data.offsets[0]])[0]
    assert np.array_equal(data.batch([data.offsets[rot90]])[0], np.rot90(first, 1, axes=(1, 2)))
    with pytest.raises(InputError, match="applies to Omniglot's test classes"):
        evaluation_set(lake_trained, spec, "mydigits.npz", omniglot_root, rotations=True)
    with pytest.raises(InputError, match="pass --data"):
        evaluation_set({"dataset": "mydigits.npz"}, spec, None, omniglot_root)
