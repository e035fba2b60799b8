"""Distillation of a bundle's embedding into a single-view conv4: the teacher's weights read from ONNX
reproduce it in torch, malformed teachers are refused, the loss behaves, and a run exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemeta.contract.bundle import read_bundle
from edgemeta.errors import InputError
from edgemeta.runtime import Bundle
from edgemeta.train.distill import (DistillConfig, conv4_state_from_onnx, distill, distill_loss, parse_widths,
                                    student_from_teacher)
from edgemeta.train.shift_views import ShiftAveraged

MODELS = Path(__file__).resolve().parents[1] / "models"
NINE_VIEW = MODELS / "omniglot-conv4"
COMPACT = MODELS / "omniglot-conv4-proto"


def _shipped(path: Path) -> tuple[dict, dict]:
    if not (path / "manifest.json").is_file():  # pragma: no cover - shipped with the checkout
        pytest.skip(f"shipped bundle not found at {path}")
    return read_bundle(path)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def test_torch_student_reproduces_the_9_view_teacher_onnx_embedding():
    manifest, files = _shipped(NINE_VIEW)
    model = student_from_teacher(manifest, files)
    x = _images(17)
    with torch.no_grad():
        nine = ShiftAveraged(model.backbone, 9)(torch.from_numpy(x)).numpy()
        one = model.backbone(torch.from_numpy(x)).numpy()
    onnx = Bundle(manifest, files, "teacher", precision="fp32").embed(x)
    assert nine.shape == (17, 576)
    assert np.abs(nine - onnx).max() < 1e-4
    assert np.abs(one - onnx).max() > 1e-3             # a single view is not the 9-view embedding
    assert model.method.hparams()["scale"] == pytest.approx(manifest["head"]["scale"], rel=1e-6)


def test_torch_student_reproduces_a_single_view_64d_bundle():
    manifest, files = _shipped(COMPACT)
    model = student_from_teacher(manifest, files)
    x = _images(9, seed=1)
    with torch.no_grad():
        z = model.backbone(torch.from_numpy(x)).numpy()
    assert z.shape == (9, 64)
    assert np.abs(z - Bundle(manifest, files, "teacher", precision="fp32").embed(x)).max() < 1e-4


@pytest.mark.parametrize("mutate", ["truncated", "flipped", "empty", "not_onnx", "adapt_graph"])
def test_malformed_teacher_graphs_are_input_errors(mutate):
    manifest, files = _shipped(COMPACT)
    data = files["backbone.onnx"]
    bad = {"truncated": data[: len(data) // 3], "flipped": bytes(b ^ 0xFF for b in data[:64]) + data[64:],
           "empty": b"", "not_onnx": b"\x00" * 1000, "adapt_graph": files["adapt.onnx"]}[mutate]
    with pytest.raises(InputError, match="teacher backbone"):
        conv4_state_from_onnx(bad)


def test_teacher_with_wrong_convolution_shapes_is_refused():
    import onnx

    manifest, files = _shipped(COMPACT)
    model = onnx.load_from_string(files["backbone.onnx"])
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    init = next(t for t in model.graph.initializer if t.name == conv.input[1])
    w = onnx.numpy_helper.to_array(init)
    init.CopyFrom(onnx.numpy_helper.from_array(np.full(w.shape, np.nan, np.float32), init.name))
    with pytest.raises(InputError, match="finite 3x3 weights"):
        conv4_state_from_onnx(model.SerializeToString())


def test_non_proto_or_colour_teachers_are_refused():
    manifest, files = _shipped(COMPACT)
    with pytest.raises(InputError, match="grey proto conv4"):
        student_from_teacher({**manifest, "method": "ridge"}, files)
    colour = {**manifest, "input": {**manifest["input"], "shape": [None, 3, 84, 84]}}
    with pytest.raises(InputError, match="grey proto conv4"):
        student_from_teacher(colour, files)


def test_distill_loss_is_zero_when_equal_and_relative():
    t = torch.randn(8, 16)
    assert distill_loss(t, t).item() == 0.0
    assert distill_loss(t + 0.1 * t, t).item() == pytest.approx(0.01, rel=1e-5)
    assert distill_loss(10 * (t + 0.1 * t), 10 * t).item() == pytest.approx(0.01, rel=1e-5)


def test_distillation_steps_pull_the_student_toward_the_teacher():
    manifest, files = _shipped(NINE_VIEW)
    model = student_from_teacher(manifest, files)
    x = torch.from_numpy(_images(64, seed=2))
    target = torch.from_numpy(Bundle(manifest, files, "teacher", precision="fp32").embed(x.numpy()))
    opt = torch.optim.Adam(model.backbone.parameters(), lr=1e-4)
    losses = []
    for _ in range(15):
        loss = distill_loss(model.backbone(x), target)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]


def small_distillation(bundle_dir, lake_sets, tmp_path):
    """``(train, val, teacher)``: 40 training and 12 validation classes of the Lake split and a copy of
    the tiny session bundle as teacher, for runs of a few episodes."""
    train, val, _ = lake_sets
    teacher = tmp_path / "teacher"
    shutil.copytree(bundle_dir, teacher)
    return train.subset(np.arange(40)), val.subset(np.arange(12)), teacher


def test_a_distillation_run_resumes_and_exports_a_single_view_bundle(bundle_dir, lake_sets, tmp_path):
    """The tiny session bundle (Lake split) as teacher: a few episodes, resumed, exported and loaded."""
    from edgemeta.train.export import export_bundle, load_run

    train, val, teacher = small_distillation(bundle_dir, lake_sets, tmp_path)
    cfg = DistillConfig(teacher=str(teacher), ways=5, episodes=4, val_every=2, val_episodes=10, val_ways=5)
    run = tmp_path / "run"
    first = distill(cfg, train, val, run, log=lambda s: None)
    assert first["episodes"] == 4 and len(first["history"]) == 2
    assert 0.0 < first["teacher_val"]["val_acc"] <= 100.0
    with pytest.raises(InputError, match="other distillation settings"):
        distill(DistillConfig(**{**cfg.__dict__, "lr": 1.0}), train, val, run, resume=True, log=lambda s: None)
    more = DistillConfig(**{**cfg.__dict__, "episodes": 6})    # the same run, continued to 6 episodes
    second = distill(more, train, val, run, resume=True, log=lambda s: None)
    assert second["episodes"] == 6 and [h["step"] for h in second["history"]] == [2, 4, 6]
    model, record = load_run(run)
    assert record["provenance"]["distilled_from"]["manifest_sha256"] == Bundle.load(teacher).identity
    out = tmp_path / "student"
    manifest = export_bundle(run, out, val, parity_episodes=3, metric_episodes=10)
    assert manifest["embedding"].get("shift_views", [[0, 0]]) == [[0, 0]] and manifest["format_version"] in (1, 2)
    student = Bundle.load(out)
    x = val.batch(np.arange(5))
    with torch.no_grad():
        assert np.abs(student.embed(x) - model.backbone(torch.from_numpy(x)).numpy()).max() < 1e-4


def test_cli_distill_refuses_a_teacher_not_trained_on_omniglot_and_an_occupied_run_folder(tmp_path):
    from typer.testing import CliRunner

    from edgemeta.cli import app

    regression = MODELS / "sinusoid-metasgd"
    if not (regression / "manifest.json").is_file():  # pragma: no cover - shipped with the checkout
        pytest.skip("shipped regression bundle not found")
    r = CliRunner().invoke(app, ["distill", str(regression), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "Omniglot" in r.output
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text("{}")
    r = CliRunner().invoke(app, ["distill", str(COMPACT), "--out", str(tmp_path / "old")])
    assert r.exit_code == 2 and "already holds a run" in r.output


def test_shipped_distilled_bundle_is_one_pass_and_closer_to_its_teacher_than_the_teachers_single_view(
        omniglot_root):
    """On validation characters (never trained on), the shipped student's embedding is nearer the
    9-view teacher's than the teacher's own single view is."""
    from edgemeta.data.omniglot import load_omniglot

    student_dir = MODELS / "omniglot-conv4-distilled"
    manifest, files = _shipped(NINE_VIEW)
    s_manifest, s_files = _shipped(student_dir)
    assert s_manifest["embedding"].get("shift_views", [[0, 0]]) == [[0, 0]] and s_manifest["embedding"]["dim"] == 576
    assert s_manifest["provenance"]["distilled_from"]["manifest_sha256"] == manifest["integrity"]["manifest_sha256"]
    val = load_omniglot("vinyals", "val", omniglot_root)
    x = val.batch(np.arange(0, val.n_images, 17)).astype(np.float32)          # 203 drawings
    teacher = torch.from_numpy(Bundle(manifest, files, "teacher", precision="fp32").embed(x))
    student = torch.from_numpy(Bundle(s_manifest, s_files, "student", precision="fp32").embed(x))
    with torch.no_grad():
        single = student_from_teacher(manifest, files).backbone(torch.from_numpy(x))
    assert distill_loss(student, teacher).item() < 0.9 * distill_loss(single, teacher).item()


def test_a_widened_distillation_run_starts_as_the_teacher_single_view_resumes_and_exports(bundle_dir, lake_sets,
                                                                                           tmp_path):
    """``widths``: the run's student starts with the teacher's single-view validation accuracy (the
    widening preserves the function), is recorded, resumes only with the same widths, and exports
    through the parity gate as an ordinary proto bundle with the widened backbone."""
    from edgemeta.train.export import export_bundle, load_run

    train, val, teacher = small_distillation(bundle_dir, lake_sets, tmp_path)
    h = student_from_teacher(*read_bundle(teacher)).backbone.widths[0]
    widths = [h, h + 8, 2 * h, h]
    base = {"teacher": str(teacher), "ways": 5, "episodes": 2, "val_every": 2, "val_episodes": 10, "val_ways": 5}
    narrow = distill(DistillConfig(**base), train, val, tmp_path / "narrow", log=lambda s: None)
    cfg = DistillConfig(**base, widths=widths)
    run = tmp_path / "run"
    first = distill(cfg, train, val, run, log=lambda s: None)
    assert first["distill"]["widths"] == widths and first["config"]["backbone_kwargs"]["widths"] == widths
    assert first["student_start_val"] == narrow["student_start_val"]
    with pytest.raises(InputError, match="other distillation settings"):
        distill(DistillConfig(**{**base, "episodes": 4}), train, val, run, resume=True, log=lambda s: None)
    second = distill(DistillConfig(**{**base, "episodes": 4}, widths=widths), train, val, run, resume=True,
                     log=lambda s: None)
    assert [h["step"] for h in second["history"]] == [2, 4]
    model, _ = load_run(run)
    assert [blk[0].out_channels for blk in model.backbone.blocks] == widths
    manifest = export_bundle(run, tmp_path / "student", val, parity_episodes=3, metric_episodes=10)
    assert manifest["method"] == "proto" and manifest["format_version"] in (1, 2)
    x = val.batch(np.arange(5))
    with torch.no_grad():
        want = model.backbone(torch.from_numpy(x)).numpy()
    assert np.abs(Bundle.load(tmp_path / "student").embed(x) - want).max() < 1e-4


def test_a_run_recorded_before_widths_existed_resumes_with_the_default(bundle_dir, lake_sets, tmp_path):
    import json

    train, val, teacher = small_distillation(bundle_dir, lake_sets, tmp_path)
    cfg = DistillConfig(teacher=str(teacher), ways=5, episodes=2, val_every=2, val_episodes=10, val_ways=5)
    run = tmp_path / "run"
    distill(cfg, train, val, run, log=lambda s: None)
    record = json.loads((run / "run.json").read_text())
    for key in ("widths", "widen_noise"):
        del record["distill"][key]
    (run / "run.json").write_text(json.dumps(record))
    more = distill(DistillConfig(**{**cfg.__dict__, "episodes": 4}), train, val, run, resume=True, log=lambda s: None)
    assert more["episodes"] == 4


@pytest.mark.parametrize("text,widths", [("64,64,320,64", [64, 64, 320, 64]), (None, None)])
def test_parse_widths(text, widths):
    assert parse_widths(text) == widths


@pytest.mark.parametrize("text", ["64,64,320", "64,64,x,64", "", "64,0,64,64", "64,64,64,64,64"])
def test_bad_widths_are_input_errors(text):
    with pytest.raises(InputError, match="four positive channel counts"):
        parse_widths(text)


def test_cli_distill_refuses_bad_widths(tmp_path):
    from typer.testing import CliRunner

    from edgemeta.cli import app

    r = CliRunner().invoke(app, ["distill", str(COMPACT), "--out", str(tmp_path / "run"), "--widths", "64,64"])
    assert r.exit_code == 2 and "four positive channel counts" in r.output
