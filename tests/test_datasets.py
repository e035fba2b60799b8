"""User datasets (class-grouped .npz and image folders) land on exactly the same pixels as Omniglot's loader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgemeta.contract.preprocess import default_spec
from edgemeta.data.files import load_class_npz, load_dataset, load_image_folder, split_classes
from edgemeta.data.omniglot import load_omniglot
from edgemeta.data.sources import training_sets
from edgemeta.errors import InputError

SPEC = default_spec((28, 28))


@pytest.fixture(scope="module")
def raw(omniglot_root):
    """The first 6 evaluation characters at full resolution: uint8 0/1 (1 = ink) ``[6, 20, 105, 105]``."""
    with np.load(omniglot_root / "evaluation.npz") as z:
        return z["images"][:6], [str(a) for a in z["alphabet"][:6]], z["character"][:6]


@pytest.fixture(scope="module")
def expected(omniglot_root):
    return load_omniglot("lake", "test", omniglot_root, rotations=False).subset(np.arange(6))


@pytest.mark.parametrize("encode", [
    lambda x: x,                                   # uint8 0/1: a binary mask, 1 = ink (Omniglot's own layout)
    lambda x: x.astype(bool),
    lambda x: x * np.uint8(255),                   # uint8 grey levels
    lambda x: x.astype(np.float32),
])
def test_npz_matches_omniglot_loader(tmp_path, raw, expected, encode):
    images, _, _ = raw
    names = np.array([f"char{i}" for i in range(6)])
    np.savez(tmp_path / "d.npz", images=encode(images), names=names)
    data = load_class_npz(tmp_path / "d.npz", SPEC)
    assert data.names == tuple(names) and data.counts.tolist() == [20] * 6
    np.testing.assert_array_equal(data.images, expected.images)
    assert load_dataset(tmp_path / "d.npz", SPEC).names == data.names


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "a.npz", pixels=np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(InputError, match=r"no 'images' array; expected images \[n_classes, n_per_class, H, W\]"):
        load_class_npz(tmp_path / "a.npz", SPEC)
    np.savez(tmp_path / "b.npz", images=np.zeros((6, 28, 28), np.uint8))
    with pytest.raises(InputError, match=r"images have shape \(6, 28, 28\); expected \[n_classes, n_per_class, H, W\]"):
        load_class_npz(tmp_path / "b.npz", SPEC)
    np.savez(tmp_path / "c.npz", images=np.array([[[[None]]]], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_class_npz(tmp_path / "c.npz", SPEC)                  # object arrays are never unpickled


def test_image_folder_with_dark_ink_on_white_paper(tmp_path, raw, expected):
    images, _, _ = raw
    counts = [20, 7, 12, 20, 3, 9]                                  # folders may hold any number of files
    for c, n in enumerate(counts):
        d = tmp_path / f"class_{c}"
        d.mkdir()
        for i in range(n):
            Image.fromarray(((1 - images[c, i]) * 255).astype(np.uint8)).save(d / f"{i:02d}.png")
    (tmp_path / "class_0" / "README.txt").write_text("not an image")
    data = load_image_folder(tmp_path, SPEC)                        # ink="auto" finds the dark strokes
    assert data.names == tuple(f"class_{c}" for c in range(6))
    assert data.counts.tolist() == counts
    for c, n in enumerate(counts):
        got = data.images[data.offsets[c]:data.offsets[c] + n]
        np.testing.assert_array_equal(got, expected.images[expected.offsets[c]:expected.offsets[c] + n])
    inverted = load_image_folder(tmp_path, SPEC, ink="high")        # the wrong ink gives the negative
    np.testing.assert_array_equal(inverted.images, 1.0 - data.images)


def test_image_folder_errors(tmp_path):
    with pytest.raises(InputError, match="is not a folder; expected root/<class>/<image files>"):
        load_image_folder(tmp_path / "missing", SPEC)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(InputError, match="holds no class folders with images"):
        load_image_folder(tmp_path, SPEC)


def test_split_classes_is_by_class(expected):
    train, val = split_classes(expected, 0.34, seed=0)
    assert train.n_classes + val.n_classes == 6 and val.n_classes == 2
    assert not set(train.names) & set(val.names)
    assert not set(train.image_ids.tolist()) & set(val.image_ids.tolist())
    again = split_classes(expected, 0.34, seed=0)
    assert again[1].names == val.names
    assert {split_classes(expected, 0.34, seed=s)[1].names for s in range(10)} != {val.names}
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
            split_classes(expected, bad, seed=0)


def test_training_sets_for_a_user_dataset(tmp_path, raw):
    images, _, _ = raw
    np.savez(tmp_path / "mine.npz", images=np.concatenate([images] * 3))        # 18 classes
    train, val, prov = training_sets(str(tmp_path / "mine.npz"), "vinyals", (28, 28), None, val_fraction=0.2, seed=1)
    assert (train.n_classes, val.n_classes) == (14, 4)
    assert prov["dataset"] == str(tmp_path / "mine.npz") and prov["train_classes"] == 14
    assert "val_fraction=0.2" in prov["split"]


def test_a_small_user_dataset_trains_and_exports(tmp_path, omniglot_root):
    """60 classes -> 51 train / 9 validation classes: enough for the 5-way validation the trainer uses,
    so the exporter must not demand 20 validation classes (its 20-way parity/metric episodes)."""
    from edgemeta.runtime import Bundle
    from edgemeta.train.export import export_bundle
    from edgemeta.train.trainer import TrainConfig, meta_train

    with np.load(omniglot_root / "evaluation.npz") as z:
        np.savez(tmp_path / "mine.npz", images=z["images"][:60])
    train, val, prov = training_sets(str(tmp_path / "mine.npz"), "vinyals", (28, 28), None, 0.15, 0)
    assert (train.n_classes, val.n_classes) == (51, 9)
    cfg = TrainConfig(dataset=str(tmp_path / "mine.npz"), device="cpu", ways=5, shots=1, queries=5,
                      max_episodes=10, val_every=10, val_episodes=5)
    meta_train(cfg, train, val, tmp_path / "run", provenance=prov, progress=False, log=lambda s: None)
    manifest = export_bundle(tmp_path / "run", tmp_path / "bundle", val, parity_episodes=3, metric_episodes=5)
    assert "5w1s" in manifest["validation"]
    assert Bundle.load(tmp_path / "bundle").manifest == manifest


def test_missing_omniglot_is_the_projects_error_naming_where_it_looked(tmp_path, monkeypatch):
    from edgemeta.errors import DataNotFoundError

    monkeypatch.setenv("EDGEMETA_OMNIGLOT", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    from edgemeta.data import omniglot

    monkeypatch.setattr(omniglot, "__file__", str(tmp_path / "a" / "b" / "c" / "omniglot.py"))
    with pytest.raises(DataNotFoundError, match=r"Omniglot not found; looked in .*nowhere.*--omniglot PATH") as err:
        load_omniglot(part="test")
    assert isinstance(err.value, InputError) and isinstance(err.value, FileNotFoundError)
