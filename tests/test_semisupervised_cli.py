"""The semi-supervised commands and evaluator: ``edgemeta add-refine``, ``adapt --unlabeled``,
``eval --unlabeled M --distractors D`` (grey Omniglot and the colour contract)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgemeta.cli import app
from edgemeta.data.classes import ClassImages
from edgemeta.errors import ExportError, InputError
from edgemeta.evaluation import runtime_images
from edgemeta.runtime import Bundle, FewShotClassifier
from edgemeta.semisupervised_eval import embed_classes, evaluate_semi, sample_semi_episode

MODELS = Path(__file__).resolve().parents[1] / "models"
REFINE = MODELS / "omniglot-conv4-proto-refine"
PLAIN = MODELS / "omniglot-conv4-proto"
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-imagenet" / "sample"


def _glyph_folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """support/<a,b>/ (2 PNGs each, dark strokes on white), unlabeled/ (4 PNGs), more/ (2 PNGs)."""
    rng = np.random.default_rng(1)
    base = rng.random((2, 105, 105)) > 0.85
    def save(path: Path, cls: int) -> None:
        ink = np.logical_xor(base[cls], rng.random((105, 105)) > 0.98)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).save(path)
    for c, name in enumerate("ab"):
        for i in range(2):
            save(tmp_path / "support" / name / f"{i}.png", c)
    for i in range(4):
        save(tmp_path / "unlabeled" / f"u{i}.png", i % 2)
    for i in range(2):
        save(tmp_path / "more" / f"m{i}.png", i % 2)
    return tmp_path / "support", tmp_path / "unlabeled", tmp_path / "more"


def test_adapt_with_unlabeled_keeps_their_embeddings_and_refines(tmp_path):
    support, unlabeled, more = _glyph_folders(tmp_path)
    state = tmp_path / "me.state"
    run = CliRunner().invoke
    res = run(app, ["adapt", str(REFINE), "--support", str(support), "--unlabeled", str(unlabeled), "--state", str(state)])
    assert res.exit_code == 0, res.output
    clf = FewShotClassifier.load(REFINE, state)
    assert clf._pool.shape == (4, 64) and list(clf.classes_) == ["a", "b"]
    res = run(app, ["adapt", str(REFINE), "--unlabeled", str(more), "--state", str(state)])
    assert res.exit_code == 0, res.output
    grown = FewShotClassifier.load(REFINE, state)
    assert grown._pool.shape == (6, 64)
    files = sorted(unlabeled.iterdir()) + sorted(more.iterdir())
    ref = FewShotClassifier(REFINE, ink=clf.ink).fit([p for d in "ab" for p in sorted((support / d).iterdir())],
                                                     ["a", "a", "b", "b"], unlabeled=files)
    np.testing.assert_allclose(grown.params_["prototypes"], ref.params_["prototypes"], rtol=1e-6, atol=1e-6)
    res = run(app, ["predict", str(REFINE), "--state", str(state), str(more), "--json"])
    assert res.exit_code == 0 and len(res.output.strip().splitlines()) == 2


@pytest.mark.parametrize("args, message", [
    (["--state", "{t}/s.state"], "give --support FOLDER"),
    (["--unlabeled", "{t}/nothing", "--state", "{t}/s.state"], "is not a folder"),
    (["--unlabeled", "{t}/empty", "--state", "{t}/s.state"], "holds no image files"),
])
def test_adapt_refuses_what_it_cannot_use(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["adapt", str(REFINE), *[a.format(t=tmp_path) for a in args]])
    assert res.exit_code == 2 and message in res.output


def test_adapt_unlabeled_with_a_bundle_without_refine_graph_names_the_fix(tmp_path):
    _, unlabeled, _ = _glyph_folders(tmp_path)
    res = CliRunner().invoke(app, ["adapt", str(PLAIN), "--unlabeled", str(unlabeled), "--state", str(tmp_path / "s")])
    assert res.exit_code == 2 and "edgemeta add-refine" in res.output


def test_add_refine_refuses_writing_over_its_input(tmp_path):
    from edgemeta.train.refine_export import add_refine

    with pytest.raises(ExportError, match=r"writes a new bundle; .* is the input bundle itself"):
        add_refine(PLAIN, PLAIN, None)             # type: ignore[arg-type]  refused before any data is read


def test_semi_episodes_use_every_row_once_and_mark_distractors():
    offsets, counts = np.arange(10) * 20, np.full(10, 20)
    ep = sample_semi_episode(np.random.default_rng(0), offsets, counts, 3, 2, 4, 5, 2)
    rows = np.concatenate([ep.support, ep.query, ep.unlabeled])
    assert len(set(rows.tolist())) == len(rows) == 3 * (2 + 4 + 5) + 2 * 5
    assert (ep.unlabeled_class == -1).sum() == 10 and sorted(set(ep.unlabeled_class[:15])) == [0, 1, 2]
    cls_of = lambda r: r // 20  # noqa: E731
    support_classes = set(cls_of(ep.support).tolist())
    assert not support_classes & set(cls_of(ep.unlabeled[ep.unlabeled_class == -1]).tolist())
    with pytest.raises(InputError, match=r"need 12 classes of at least 11 images; this set has 10"):
        sample_semi_episode(np.random.default_rng(0), offsets, counts, 10, 2, 4, 5, 2)


# ---------------------------------------------------------------------------------- grey Omniglot

@pytest.fixture(scope="module")
def test_chars(omniglot_root):
    from edgemeta.data.omniglot import load_omniglot

    return load_omniglot("vinyals", "test", omniglot_root, rotations=False)


def test_eval_json_reports_labelled_and_refined_in_the_same_episodes(test_chars):
    res = CliRunner().invoke(app, ["eval", str(REFINE), "--no-rotations", "--ways", "20", "--shots", "1",
                                   "--queries", "5", "--unlabeled", "5", "--distractors", "20", "--episodes", "40",
                                   "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert (r["ways"], r["shots"], r["unlabeled"], r["distractors"], r["episodes"]) == (20, 1, 5, 20, 40)
    assert r["split"] == "omniglot/vinyals/test" and r["classes"] == 423
    assert r["refined_accuracy"] > r["labelled_accuracy"]            # +3 points on 1,000 episodes
    assert abs(r["refined_accuracy"] - r["labelled_accuracy"] - r["gain"]) < 0.01


def test_the_evaluator_equals_the_classifier_an_app_uses(test_chars):
    """Each episode's refined predictions equal FewShotClassifier.fit(images, labels, unlabeled=images)."""
    bundle = Bundle.load(REFINE)
    emb = embed_classes(bundle, test_chars)
    got = evaluate_semi(bundle, test_chars, 5, 1, 5, 5, 5, 3, seed=7, embeddings=emb)
    accs = []
    for e in range(3):
        ep = sample_semi_episode(np.random.default_rng([7, e]), test_chars.offsets, test_chars.counts, 5, 1, 5, 5, 5)
        clf = FewShotClassifier(bundle).fit(runtime_images(test_chars.batch(ep.support)), np.arange(5),
                                            unlabeled=runtime_images(test_chars.batch(ep.unlabeled)))
        accs.append((clf.predict(runtime_images(test_chars.batch(ep.query))) == np.repeat(np.arange(5), 5)).mean())
    assert got["refined_accuracy"] == pytest.approx(np.mean(accs) * 100, abs=1e-6)


def test_eval_unlabeled_needs_a_refine_graph_and_distractors_need_unlabeled(test_chars):
    res = CliRunner().invoke(app, ["eval", str(PLAIN), "--no-rotations", "--unlabeled", "5", "--episodes", "2"])
    assert res.exit_code == 2 and "add-refine" in res.output
    res = CliRunner().invoke(app, ["eval", str(REFINE), "--no-rotations", "--distractors", "5", "--episodes", "2"])
    assert res.exit_code == 2 and "give --unlabeled M > 0" in res.output


# ---------------------------------------------------------------------------------- colour contract

@pytest.fixture(scope="module")
def colour_refine(colour_bundle_dir, tmp_path_factory) -> Path:
    """The untrained colour fixture with a refine graph fitted on random photos (its answers mean nothing;
    it is a real format-3 colour bundle)."""
    from edgemeta.train.refine_export import add_refine

    rng = np.random.default_rng(3)
    val = ClassImages.from_grouped(rng.integers(0, 256, (8, 9, 3, 84, 84), dtype=np.uint8),
                                   [f"v{i}" for i in range(8)])
    out = tmp_path_factory.mktemp("colour-refine") / "b"
    add_refine(colour_bundle_dir, out, val, fit_steps=5, settings=((3, 1, 2, 2),))
    return out


def test_a_colour_bundle_gains_refinement_and_evaluates(colour_refine, colour_bundle_dir):
    b = Bundle.load(colour_refine)
    assert b.channels == 3 and b.manifest["format_version"] == 3 and b.refiner is not None
    for name in Bundle.load(colour_bundle_dir).manifest["files"]:
        assert (colour_refine / name).read_bytes() == (colour_bundle_dir / name).read_bytes()
    rng = np.random.default_rng(4)
    test = ClassImages.from_grouped(rng.integers(0, 256, (6, 5, 3, 84, 84), dtype=np.uint8), list("abcdef"))
    r = evaluate_semi(b, test, 2, 1, 2, 2, 2, 4)
    assert (r["ways"], r["unlabeled"], r["distractors"], r["episodes"]) == (2, 2, 2, 4)
    assert 0 <= r["labelled_accuracy"] <= 100 and 0 <= r["refined_accuracy"] <= 100


@pytest.mark.slow
def test_eval_unlabeled_on_a_photo_folder(colour_refine):
    if not (SAMPLE / "test").is_dir():
        pytest.skip(f"mini-ImageNet sample not found at {SAMPLE}")
    res = CliRunner().invoke(app, ["eval", str(colour_refine), "--data", str(SAMPLE / "test"), "--ways", "5",
                                   "--shots", "1", "--queries", "5", "--unlabeled", "5", "--distractors", "5",
                                   "--episodes", "3", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["classes"] == 20 and r["precision"] == "fp32" and r["distractors"] == 5


@pytest.mark.slow
def test_add_refine_command_on_a_trained_bundle(bundle_dir, tmp_path):
    """The tiny session bundle (Lake split) gains a refine graph fitted on its own validation classes."""
    out = tmp_path / "refined"
    res = CliRunner().invoke(app, ["add-refine", str(bundle_dir), str(out), "--fit-steps", "12"])
    assert res.exit_code == 0, res.output
    assert "format version 3" in res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["refine"]["calibrated_on"].startswith("omniglot/lake/val classes")
    assert m["refine"]["parity"]["prototypes_max_abs"] < 1e-3
    for name in json.loads((bundle_dir / "manifest.json").read_text())["files"]:
        assert (out / name).read_bytes() == (bundle_dir / name).read_bytes()


def test_add_refine_fits_on_a_validation_folder_and_names_what_it_needs(colour_bundle_dir, tmp_path):
    """A bundle whose provenance names no validation classes: refused with the fix; with --val FOLDER it is
    fitted there (only the episode settings that folder can hold)."""
    res = CliRunner().invoke(app, ["add-refine", str(colour_bundle_dir), str(tmp_path / "out")])
    assert res.exit_code == 2 and "pass --val FOLDER" in res.output
    rng = np.random.default_rng(6)
    for c in range(10):
        (tmp_path / "val" / f"c{c}").mkdir(parents=True)
        for i in range(11):
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "val" / f"c{c}" / f"{i}.png")
    res = CliRunner().invoke(app, ["add-refine", str(colour_bundle_dir), str(tmp_path / "out"), "--val",
                                   str(tmp_path / "val"), "--fit-steps", "4"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["refine"]["fit"]["settings"] == [[5, 1, 5, 0], [5, 1, 5, 5]]
    assert m["refine"]["calibrated_on"].startswith(f"{tmp_path / 'val'} classes")


def test_feasible_settings_refuse_a_validation_set_too_small():
    from edgemeta.train.refine_export import FIT_SETTINGS, feasible

    assert feasible(FIT_SETTINGS, np.full(16, 600)) == ((5, 1, 5, 0), (5, 1, 5, 5), (5, 5, 10, 5))
    with pytest.raises(ExportError, match=r"hold none of the fitting episodes"):
        feasible(FIT_SETTINGS, np.full(4, 20))


@pytest.mark.parametrize("damage", ["truncated", "not_an_image"])
def test_a_damaged_unlabelled_file_is_named_and_the_state_left_as_it_was(tmp_path, damage):
    support, unlabeled, _ = _glyph_folders(tmp_path)
    state = tmp_path / "me.state"
    run = CliRunner().invoke
    assert run(app, ["adapt", str(REFINE), "--support", str(support), "--state", str(state)]).exit_code == 0
    before = state.read_bytes()
    bad = unlabeled / "u1.png"
    bad.write_bytes(bad.read_bytes()[:40] if damage == "truncated" else b"GIF89a but not really" * 3)
    res = run(app, ["adapt", str(REFINE), "--unlabeled", str(unlabeled), "--state", str(state)])
    assert res.exit_code == 2 and "u1.png" in res.output, res.output
    assert state.read_bytes() == before


def test_add_refine_finds_the_val_folder_beside_the_photo_bundles_train_folder(colour_bundle_dir, tmp_path):
    """A photo bundle's provenance names its dataset folder (train/ val/ test/); its val/ classes fit the mask."""
    from edgemeta.contract.bundle import read_bundle, write_bundle

    rng = np.random.default_rng(8)
    for c in range(10):
        (tmp_path / "photos" / "val" / f"c{c}").mkdir(parents=True)
        for i in range(11):
            Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(
                tmp_path / "photos" / "val" / f"c{c}" / f"{i}.jpg")
    manifest, files = read_bundle(colour_bundle_dir)
    manifest["provenance"] = {**manifest["provenance"], "dataset": str(tmp_path / "photos")}
    photo = write_bundle(tmp_path / "photo.bundle", manifest, files)
    res = CliRunner().invoke(app, ["add-refine", str(photo), str(tmp_path / "out"), "--fit-steps", "3"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["refine"]["calibrated_on"].startswith(f"{tmp_path / 'photos' / 'val'} classes (10 classes")
