"""Colour photos on the training side: preprocessing to uint8, split folders, augmentation, a tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgemeta.contract.preprocess import preprocess_colour_uint8, unit_float
from edgemeta.data.classes import ClassImages
from edgemeta.errors import InputError

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-imagenet" / "sample"


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory) -> Path:
    """``train/`` (5 classes) and ``val/`` (5 classes) of real mini-ImageNet photos, as folder links."""
    if not (SAMPLE / "train").is_dir():
        pytest.skip(f"mini-ImageNet sample not found at {SAMPLE} (see ../shared/data/mini-imagenet/README.md)")
    root = tmp_path_factory.mktemp("photos")
    classes = sorted(p for p in (SAMPLE / "train").iterdir() if p.is_dir())
    for split, group in (("train", classes[:5]), ("val", classes[5:10])):
        (root / split).mkdir()
        for c in group:
            (root / split / c.name).symlink_to(c)
    return root


def _reference_pixels(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The colour rule written out pixel by pixel (centre crop, integer bins, rounded mean)."""
    H, W = size
    h, w = rgb.shape[:2]
    if w * H > h * W:
        ch, cw, y0, x0 = h, (h * W) // H, 0, (w - (h * W) // H) // 2
    else:
        ch, cw, y0, x0 = (w * H) // W, w, (h - (w * H) // W) // 2, 0
    crop = rgb[y0:y0 + ch, x0:x0 + cw].astype(np.int64)

    def bins(n_in: int, n_out: int) -> list[tuple[int, int]]:
        if n_in >= n_out:
            return [((i * n_in) // n_out, ((i + 1) * n_in) // n_out) for i in range(n_out)]
        step = n_in / n_out                                   # Pillow's nearest rule, running float64 sum
        pos, out = 0.5 * step, []
        for _ in range(n_out):
            k = min(int(pos), n_in - 1)
            out.append((k, k + 1))
            pos += step
        return out

    out = np.zeros((3, H, W), np.uint8)
    for i, (r0, r1) in enumerate(bins(ch, H)):
        for j, (c0, c1) in enumerate(bins(cw, W)):
            block = crop[r0:r1, c0:c1].reshape(-1, 3)
            s, c = block.sum(0), len(block)
            out[:, i, j] = (s + c // 2) // c
    return out


@pytest.mark.parametrize("shape,size", [((84, 84), (84, 84)), ((97, 130), (84, 84)), ((200, 61), (21, 19)),
                                        ((30, 50), (84, 84)), ((13, 9), (6, 6))])
def test_colour_pixels_follow_the_colour_rule(shape, size):
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = preprocess_colour_uint8([rgb], size)[0]
    assert got.dtype == np.uint8 and got.shape == (3, *size)
    np.testing.assert_array_equal(got, _reference_pixels(rgb, size))


def test_uint8_pixels_batch_to_the_runtime_float_bit_for_bit():
    from edgemeta.train.trainer import to_input

    v = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16).repeat(3, axis=1)
    data = ClassImages.from_lists([v, v[:, ::-1].copy()], ["a", "b"])
    assert data.pixels.dtype == np.uint8 and data.channels == 3
    x = data.batch([0, 1])
    want = v.astype(np.float32) / np.float32(255)            # the runtime's float32(v) / float32(255)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x[0].view(np.uint32), want[0].view(np.uint32))
    t = to_input(torch.from_numpy(data.pixels)).numpy()       # what training feeds the backbone
    np.testing.assert_array_equal(t.view(np.uint32), unit_float(data.pixels).view(np.uint32))
    assert x.max() == 1.0 and x.min() == 0.0


def test_split_folders_load_as_uint8_and_record_classes(photo_root):
    from edgemeta.data.sources import training_sets

    train, val, prov = training_sets(str(photo_root), "vinyals", (84, 84), None)
    assert train.pixels.dtype == np.uint8 and train.pixels.shape == (150, 3, 84, 84)
    assert val.pixels.shape == (150, 3, 84, 84)
    assert prov["train_class_names"] == list(train.names) and prov["val_class_names"] == list(val.names)
    assert not set(train.names) & set(val.names)
    assert 40 < train.pixels.mean() < 200 and train.pixels.std() > 20          # real photos, not blank
    first = sorted((photo_root / "train" / train.names[0]).iterdir())[:7]
    from PIL import Image

    with Image.open(first[0]) as im:
        rgb = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(train.pixels[0], _reference_pixels(rgb, (84, 84)))
    # the runtime's own float input of those files, bit for bit
    from edgemeta.contract.preprocess import colour_spec, preprocess

    for size in ((84, 84), (40, 56)):
        small, _, _ = training_sets(str(photo_root), "vinyals", size, None) if size != (84, 84) else (train, 0, 0)
        runtime = preprocess([np.asarray(Image.open(f).convert("RGB")) for f in first], colour_spec(size))
        np.testing.assert_array_equal(small.batch(slice(0, 7)).view(np.uint32), runtime.view(np.uint32))


def test_eval_refuses_training_and_validation_classes(photo_root):
    from edgemeta.data.sources import evaluation_set, training_sets

    _, _, prov = training_sets(str(photo_root), "vinyals", (84, 84), None)
    spec = {"channels": 3, "size": [84, 84]}
    for split in ("train", "val"):
        with pytest.raises(InputError, match="were used in this bundle's meta-training or validation"):
            evaluation_set(prov, spec, photo_root / split, None)
    test, name = evaluation_set(prov, spec, SAMPLE / "test", None)
    assert test.n_classes == 20 and test.pixels.dtype == np.uint8 and name == str(SAMPLE / "test")


def test_photo_augment_is_deterministic_and_in_range():
    from edgemeta.train.augment import photo_augment

    x = torch.rand(6, 3, 84, 84)
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(3)
        runs.append(photo_augment(x, g))
    assert torch.equal(runs[0], runs[1])
    y = runs[0]
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert not torch.allclose(y, x, atol=0.05)
    other = photo_augment(x, torch.Generator().manual_seed(4))
    assert not torch.equal(other, y)


def test_crop_scale_one_without_flip_is_the_identity():
    """At full scale and aspect 1 the crop grid samples exactly the pixel centres: the image itself."""
    from edgemeta.train.augment import random_resized_crop_flip

    x = torch.rand(8, 3, 20, 20)
    y = random_resized_crop_flip(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    for i in range(8):
        same, mirrored = torch.allclose(y[i], x[i], atol=1e-5), torch.allclose(y[i], x[i].flip(-1), atol=1e-5)
        assert same != mirrored
    flips = sum(torch.allclose(y[i], x[i].flip(-1), atol=1e-5) for i in range(8))
    assert 0 < flips < 8


def test_colour_jitter_zero_strength_is_identity_and_grey_stays_grey():
    from edgemeta.train.augment import colour_jitter

    x = torch.rand(4, 3, 10, 10)
    torch.testing.assert_close(colour_jitter(x, torch.Generator().manual_seed(0), 0.0), x)
    grey = torch.rand(4, 1, 10, 10).expand(4, 3, 10, 10)
    y = colour_jitter(grey, torch.Generator().manual_seed(1))
    torch.testing.assert_close(y[:, 0], y[:, 1], atol=1e-6, rtol=0)        # saturation of grey is grey


def test_tiny_photo_run_pretrains_meta_trains_and_resumes(photo_root, tmp_path):
    from edgemeta.data.sources import training_sets
    from edgemeta.train.trainer import TrainConfig, meta_train

    train, val, prov = training_sets(str(photo_root), "vinyals", (84, 84), None)
    cfg = TrainConfig(device="cpu", method="proto", backbone="conv4", dataset=str(photo_root), image_size=(84, 84),
                      ways=3, shots=1, queries=2, max_episodes=4, pretrain_steps=2, pretrain_batch=8, augment=True,
                      val_every=2, val_episodes=4, val_ways=3, val_report_shots=(5,), seed=0)
    out = tmp_path / "run"
    rec = meta_train(cfg, train, val, out, provenance=prov, progress=False, log=lambda s: None, stop_after=2)
    assert rec["config"]["channels"] == 3 and rec["provenance"]["train_class_names"] == list(train.names)
    rec = meta_train(TrainConfig.from_json(rec["config"]), train, val, out, provenance=prov, progress=False,
                     log=lambda s: None, resume=True)
    assert rec["phases"] == {"pretrain": 2, "meta": 4} and rec["stopped"] == "completed all steps"
    assert [h["phase"] for h in rec["history"]] == ["pretrain", "meta", "meta"]
    assert all(0.0 <= h["val_acc_5shot"] <= 100.0 and h["val_ci95_5shot"] >= 0.0 for h in rec["history"])
    from edgemeta.train.export import load_run

    model, _ = load_run(out)
    with torch.no_grad():
        z = model.backbone(torch.from_numpy(val.batch([0, 1])))
    assert z.shape == (2, 1600) and torch.isfinite(z).all()


def test_meta_lr_sets_the_episodic_rate_only(photo_root, tmp_path):
    from edgemeta.data.sources import training_sets
    from edgemeta.train.trainer import EpisodeSteps, PretrainSteps, TrainConfig, setup_run

    train, _, _ = training_sets(str(photo_root), "vinyals", (84, 84), None)
    for meta_lr, want in ((None, 1e-3), (2.5e-4, 2.5e-4)):
        cfg = TrainConfig(device="cpu", dataset=str(photo_root), image_size=(84, 84), ways=3, channels=3,
                          lr=1e-3, meta_lr=meta_lr)
        assert TrainConfig.from_json(cfg.to_json()) == cfg
        ctx = setup_run(cfg, train, tmp_path / str(meta_lr), None, resume=False)
        assert EpisodeSteps(ctx, train).opt.param_groups[0]["lr"] == want
        assert PretrainSteps(ctx, train).opt.param_groups[0]["lr"] == 1e-3


@pytest.mark.slow
def test_tiny_photo_run_exports_a_colour_bundle_that_evaluates_on_test_classes(photo_root, tmp_path):
    """Train (2 pre-training steps), export with the int8 gate and open-set calibration, load the
    bundle on the device side and evaluate on the 20 held-out test classes."""
    from edgemeta.data.sources import evaluation_set, training_sets
    from edgemeta.evaluation import evaluate_episodes
    from edgemeta.runtime.loaded_bundle import Bundle
    from edgemeta.train.export import export_bundle
    from edgemeta.train.trainer import TrainConfig, meta_train

    train, val, prov = training_sets(str(photo_root), "vinyals", (84, 84), None)
    cfg = TrainConfig(device="cpu", dataset=str(photo_root), image_size=(84, 84), ways=5, shots=1, queries=2,
                      max_episodes=2, pretrain_steps=2, pretrain_batch=16, val_every=2, val_episodes=4, seed=0,
                      backbone_kwargs={"hidden": 16})
    meta_train(cfg, train, val, tmp_path / "run", provenance=prov, progress=False, log=lambda s: None)
    manifest = export_bundle(tmp_path / "run", tmp_path / "bundle", val, parity_episodes=3, metric_episodes=12,
                             int8_calibration=train)
    assert manifest["format_version"] == 2
    assert manifest["preprocess"]["channels"] == 3 and manifest["preprocess"]["normalization"] == "in_graph"
    assert manifest["input"]["shape"][1:] == [3, 84, 84] and manifest["embedding"]["dim"] == 16 * 25
    assert "int8" in manifest["precision"] and "open_set" in manifest
    b = Bundle.load(tmp_path / "bundle")
    test, _ = evaluation_set(b.manifest["provenance"], b.preprocess_spec, SAMPLE / "test", None)
    res = evaluate_episodes(b, test, 5, 1, 5, 10)
    assert res["classes"] == 20 and 0.0 <= res["accuracy"] <= 100.0
    with pytest.raises(InputError, match="meta-training or validation"):
        evaluation_set(b.manifest["provenance"], b.preprocess_spec, photo_root / "train", None)
