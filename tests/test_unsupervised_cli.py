"""`edgemeta train --unsupervised`: recorded in run.json and the bundle's provenance, same export, same
bundle format, same runtime; a pool too small for the tasks is refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgemeta.cli import app
from edgemeta.contract.bundle import read_bundle


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def stroke_folder(tmp_path_factory) -> Path:
    """train/unlabelled/: 100 random-stroke 28x28 PNGs in one folder, no classes; val/: 5 labelled classes
    of 20 (no Omniglot needed)."""
    root = tmp_path_factory.mktemp("strokes")
    rng = np.random.default_rng(0)
    for c in range(10):
        folder = root / "train" / "unlabelled" if c < 5 else root / "val" / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(20):
            img = np.zeros((28, 28), np.uint8)
            r, k = rng.integers(4, 20, 2)
            img[r:r + 3, c:18 + c] = 255
            img[4:24, k:k + 3] = 255
            Image.fromarray(img).save(folder / f"{c}-{i}.png")
    return root


def _train_args(out: Path, data: Path, ways: int) -> list[str]:
    return ["train", "--out", str(out), "--data", str(data), "--unsupervised", "--device", "cpu", "--ways", str(ways),
            "--shots", "1", "--queries", "1", "--episodes", "4", "--val-every", "2", "--val-episodes", "4",
            "--val-ways", "2", "--backbone", "conv4", "--no-progress"]


def test_unsupervised_run_is_recorded_and_exports_a_plain_bundle(runner, tmp_path, stroke_folder):
    run, out = tmp_path / "run", tmp_path / "bundle"
    # 10-way tasks from one folder of 100 unlabelled images: fine without labels, refused with them
    res = runner.invoke(app, _train_args(run, stroke_folder, 10))
    assert res.exit_code == 0, res.output
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["unsupervised"] is True
    assert record["provenance"]["labels_used"] == "none"
    assert "100 unlabelled training images" in record["provenance"]["meta_training_tasks"]
    from edgemeta.contract.preprocess import default_spec
    from edgemeta.data.files import load_image_folder
    from edgemeta.data.photos import split_folder_sets
    from edgemeta.train.export import export_bundle

    val = split_folder_sets(stroke_folder, (28, 28), lambda d, size: load_image_folder(d, default_spec(size)))[1]
    export_bundle(run, out, val, parity_episodes=4, metric_episodes=20)      # what `edgemeta export` runs, shorter
    manifest = read_bundle(out)[0]
    assert manifest["format_version"] == 2                        # nothing a deployed runtime cannot read
    assert manifest["provenance"]["labels_used"] == "none"
    assert manifest["provenance"]["train_config"]["unsupervised"] is True

    from edgemeta.runtime import FewShotClassifier

    clf = FewShotClassifier(out, precision="fp32")
    x = np.stack([np.asarray(Image.open(p)) for p in sorted((stroke_folder / "train" / "unlabelled").glob("0-*.png"))[:2]] +
                 [np.asarray(Image.open(p)) for p in sorted((stroke_folder / "val" / "class9").glob("*.png"))[:2]])
    clf.fit(x, ["a", "a", "b", "b"])
    assert clf.predict(x).tolist() == ["a", "a", "b", "b"]       # its own support set


def test_supervised_run_with_the_same_ways_is_refused(runner, tmp_path, stroke_folder):
    args = _train_args(tmp_path / "sup", stroke_folder, 10)
    args.remove("--unsupervised")
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "10-way 1-shot 1-query meta-training episodes need 10 classes" in res.stderr


def test_unsupervised_pool_smaller_than_the_ways_is_refused_before_training(runner, tmp_path, stroke_folder):
    res = runner.invoke(app, _train_args(tmp_path / "big", stroke_folder, 101))
    assert res.exit_code == 2, res.output
    assert "101-way unsupervised meta-training tasks need 101 unlabelled images, and the meta-training part has 100" \
        in res.stderr
    assert not (tmp_path / "big" / "run.json").exists()


def test_unsupervised_with_pretraining_is_refused(runner, tmp_path, stroke_folder):
    res = runner.invoke(app, [*_train_args(tmp_path / "pre", stroke_folder, 5), "--pretrain-steps", "10"])
    assert res.exit_code == 2 and "no many-class pre-training" in res.stderr


SHIPPED = Path(__file__).resolve().parents[1] / "models" / "omniglot-conv4-unsupervised"


def test_shipped_unsupervised_bundle_records_no_labels_and_adapts_from_one_sample(omniglot_root):
    """The shipped bundle, meta-trained without labels, learns never-seen Omniglot test characters from
    one labelled sample each (5-way, 20 episodes through the runtime; its card's figure is 93.4 %)."""
    if not (SHIPPED / "manifest.json").is_file():
        pytest.skip("models/omniglot-conv4-unsupervised is not in this checkout")
    from edgemeta.data.episodes import EpisodeSampler
    from edgemeta.data.omniglot import load_omniglot
    from edgemeta.runtime import FewShotClassifier

    manifest = read_bundle(SHIPPED)[0]
    assert manifest["format_version"] == 2 and manifest["provenance"]["labels_used"] == "none"
    assert manifest["provenance"]["train_config"]["unsupervised"] is True
    clf = FewShotClassifier(SHIPPED)
    sampler = EpisodeSampler(load_omniglot("vinyals", "test", omniglot_root, rotations=False), 5, 1, 15, seed=0)
    accuracy = []
    for e in range(20):
        ep = sampler.episode(e)
        clf.fit(ep.support_x[:, 0], ep.support_y)
        accuracy.append(float(np.mean(clf.predict(ep.query_x[:, 0]) == ep.query_y)))
    print(f"shipped unsupervised bundle, 5-way 1-shot, 20 test episodes: {100 * np.mean(accuracy):.1f} %")
    assert np.mean(accuracy) > 0.8                                       # chance: 20 %
