"""The `edgemeta` command line, driven in-process through typer's CliRunner."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from edgemeta.cli import app
from edgemeta.contract.bundle import read_bundle
from edgemeta.train.backbones import BACKBONES


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def test_inspect_verified_bundle(runner, bundle_dir):
    res = runner.invoke(app, ["inspect", str(bundle_dir)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "edgemeta-bundle v1 (verified: every sha256 matches)" in out
    assert re.search(r"method\s+proto", out) and "omniglot / lake" in out
    for name in ("backbone.onnx", "adapt.onnx", "classify.onnx"):
        assert name in out
    assert "val 5w1s" in out


def test_inspect_json_is_the_manifest(runner, bundle_dir):
    res = runner.invoke(app, ["inspect", str(bundle_dir), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == read_bundle(bundle_dir)[0]


def test_inspect_tampered_bundle(runner, bundle_copy):
    p = bundle_copy / "adapt.onnx"
    data = bytearray(p.read_bytes())
    data[100] ^= 0x40
    p.write_bytes(bytes(data))
    res = runner.invoke(app, ["inspect", str(bundle_copy)])
    assert res.exit_code == 2
    assert "error:" in res.stderr and "sha256 of adapt.onnx does not match" in res.stderr
    assert "verified" not in res.stdout


def test_inspect_missing_bundle(runner, tmp_path):
    res = runner.invoke(app, ["inspect", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "bundle not found" in res.stderr


def test_eval_json(runner, bundle_dir):
    res = runner.invoke(app, ["eval", str(bundle_dir), "--json", "--episodes", "30"])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert {"ways", "shots", "queries", "episodes", "precision", "accuracy", "ci95"} <= set(r)
    assert (r["ways"], r["shots"], r["queries"], r["episodes"], r["precision"]) == (5, 1, 15, 30, "fp32")
    assert r["split"] == "omniglot/lake/test" and r["method"] == "proto"
    assert 40.0 < r["accuracy"] <= 100.0 and r["ci95"] > 0


def test_eval_text_and_same_numbers(runner, bundle_dir):
    args = ["eval", str(bundle_dir), "--episodes", "20", "--ways", "3", "--shots", "2", "--queries", "4"]
    text = runner.invoke(app, args)
    as_json = runner.invoke(app, args + ["--json"])
    assert text.exit_code == 0 and as_json.exit_code == 0, text.output + as_json.output
    r = json.loads(as_json.stdout)
    assert (r["ways"], r["shots"], r["queries"], r["episodes"]) == (3, 2, 4, 20)
    assert "3-way 2-shot 4-query, 20 episodes" in text.stdout
    assert f"{r['accuracy']:.2f} ± {r['ci95']:.2f}" in text.stdout


def test_eval_on_another_split_and_on_a_non_bundle(runner, bundle_dir, tmp_path):
    # lake-trained bundle on vinyals test is fine; the reverse case is covered in test_omniglot_splits
    res = runner.invoke(app, ["eval", str(bundle_dir), "--json", "--episodes", "5", "--split", "vinyals"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["split"] == "omniglot/vinyals/test+rotations"
    res = runner.invoke(app, ["eval", str(bundle_dir), "--json", "--episodes", "5", "--split", "vinyals",
                              "--no-rotations"])
    assert res.exit_code == 0, res.output
    assert (json.loads(res.stdout)["split"], json.loads(res.stdout)["classes"]) == ("omniglot/vinyals/test", 423)
    bad = tmp_path / "bad.bundle"
    bad.mkdir()
    res = runner.invoke(app, ["eval", str(bad), "--episodes", "5"])
    assert res.exit_code == 2 and "no manifest.json" in res.stderr


def test_train_unknown_backbone_lists_known_ones(runner, tmp_path):
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--backbone", "resnet999", "--split", "lake",
                              "--device", "cpu", "--episodes", "2", "--no-progress"])
    assert res.exit_code == 2
    assert "unknown backbone 'resnet999'" in res.stderr
    for name in BACKBONES:
        assert name in res.stderr
    assert not (tmp_path / "run" / "best.npz").exists()


def test_train_bad_device_and_split(runner, tmp_path):
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--device", "tpu", "--episodes", "2",
                              "--no-progress", "--split", "lake"])
    assert res.exit_code == 2 and "device must be cpu, cuda or auto" in res.stderr
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "r2"), "--split", "maml", "--episodes", "2",
                              "--no-progress"])
    assert res.exit_code == 2 and "unknown Omniglot split 'maml'" in res.stderr


def test_export_refuses_a_directory_that_is_not_a_run(runner, tmp_path):
    res = runner.invoke(app, ["export", str(tmp_path), str(tmp_path / "out")])
    assert res.exit_code == 2 and "is not a finished run" in res.stderr
    assert not (tmp_path / "out").exists()


def test_no_args_shows_help(runner):
    res = runner.invoke(app, [])
    assert "train" in res.output and "export" in res.output and "inspect" in res.output


@pytest.mark.slow
def test_train_export_eval_through_the_cli(runner, tmp_path):
    """The whole workstation -> device flow as a user runs it (a few minutes on 2 CPU cores)."""
    run, out, z = tmp_path / "run", tmp_path / "bundle", tmp_path / "bundle.zip"
    res = runner.invoke(app, ["train", "--out", str(run), "--split", "lake", "--device", "cpu", "--ways", "20",
                              "--episodes", "300", "--val-every", "100", "--val-episodes", "50", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "best val" in res.stdout
    res = runner.invoke(app, ["export", str(run), str(out), "--zip", str(z)])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.stdout and z.is_file()
    res = runner.invoke(app, ["eval", str(z), "--json", "--episodes", "200"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["accuracy"] > 75.0
