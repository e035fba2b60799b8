"""The `edgemeta` command line: exit codes, messages and help, driven through typer's CliRunner
(in-process) or a subprocess where the real interpreter state matters (torch not installed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.main import get_command
from typer.testing import CliRunner

from edgemeta.cli import app
from edgemeta.cli_errors import TRAIN_EXTRA
from edgemeta.contract.bundle import read_bundle
from edgemeta.train.backbones import BACKBONES
from edgemeta.train.method_specs import METHOD_SPECS

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "export", "eval", "inspect", "bench", "adapt", "predict", "forget", "demo")


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A user dataset as an image folder: 6 classes x 20 random-stroke 28x28 PNGs (no Omniglot needed)."""
    root = tmp_path_factory.mktemp("tiny_data")
    rng = np.random.default_rng(0)
    for c in range(6):
        for i in range(20):
            img = np.zeros((28, 28), np.uint8)
            r, k = rng.integers(4, 20, 2)
            img[r:r + 6, :] = 255 if c % 2 else 0
            img[:, k:k + 4] = 255
            (root / f"class{c}").mkdir(exist_ok=True)
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    return root


def tiny_train_args(out: Path, data: Path) -> list[str]:
    """A run over ``tiny_folder`` that takes a few seconds on the CPU."""
    return ["train", "--out", str(out), "--data", str(data), "--device", "cpu", "--ways", "3", "--shots", "1",
            "--queries", "1", "--episodes", "2", "--val-every", "1", "--val-episodes", "2", "--val-ways", "2",
            "--backbone", "mlp", "--no-progress"]


def help_text(runner: CliRunner, *args: str) -> str:
    res = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"}, prog_name="edgemeta")
    assert res.exit_code == 0, res.output
    return res.stdout


# ------------------------------------------------------------------------------------------ inspect, eval
def test_inspect_verified_bundle(runner, bundle_dir):
    res = runner.invoke(app, ["inspect", str(bundle_dir)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "edgemeta-bundle v2 (verified: every sha256 matches)" in out      # exports write format version 2
    assert re.search(r"method\s+proto", out) and "omniglot / lake" in out
    for name in ("backbone.onnx", "adapt.onnx", "classify.onnx"):
        assert name in out
    assert "val 5w1s" in out


@pytest.mark.parametrize("bundle", sorted(p.name for p in (Path(__file__).resolve().parents[1] / "models").iterdir()
                                           if (p / "manifest.json").is_file()))
def test_inspect_describes_every_shipped_bundle(runner, bundle):
    """Classifiers (accuracy over episodes) and regression bundles (MSE over tasks) alike."""
    res = runner.invoke(app, ["inspect", str(Path(__file__).resolve().parents[1] / "models" / bundle)])
    assert res.exit_code == 0, res.output
    assert "(verified: every sha256 matches)" in res.stdout
    manifest = json.loads((Path(__file__).resolve().parents[1] / "models" / bundle / "manifest.json").read_text())
    records = [k for k, v in manifest["validation"].items() if isinstance(v, dict)]
    assert records and all(f"val {k}" in res.stdout for k in records)
    assert ("mse " in res.stdout) == ("regression" in manifest)
    assert "None" not in res.stdout.split("trained", 1)[1].splitlines()[0]


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
    assert "Traceback" not in res.output


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


# ----------------------------------------------------------------------------- train: messages, no data
def test_train_unknown_backbone_lists_known_ones(runner, tmp_path, tiny_folder):
    args = tiny_train_args(tmp_path / "run", tiny_folder)
    args[args.index("--backbone") + 1] = "resnet999"
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "unknown backbone 'resnet999'" in res.stderr
    for name in BACKBONES:
        assert name in res.stderr
    assert not (tmp_path / "run" / "best.npz").exists()


def test_train_bad_device_split_method_and_kwargs(runner, tmp_path, tiny_folder):
    args = tiny_train_args(tmp_path / "r", tiny_folder)
    args[args.index("--device") + 1] = "tpu"
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "device must be cpu, cuda or auto" in res.stderr
    # checked before any data is looked for: no Omniglot needed for these messages
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "r2"), "--split", "maml", "--no-progress"])
    assert res.exit_code == 2 and "unknown Omniglot split 'maml'" in res.stderr
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "r3"), "--method", "maml", "--no-progress"])
    assert res.exit_code == 2 and "unknown method 'maml'" in res.stderr
    assert all(name in res.stderr for name in METHOD_SPECS)
    res = runner.invoke(app, [*tiny_train_args(tmp_path / "r4", tiny_folder), "--method-kwargs", "[1, 2]"])
    assert res.exit_code == 2 and "--method-kwargs must be a JSON object" in res.stderr
    assert not any((tmp_path / d).exists() for d in ("r", "r2", "r3", "r4"))


def test_train_refuses_a_folder_that_holds_a_run(runner, tmp_path, tiny_folder):
    run = tmp_path / "run"
    res = runner.invoke(app, tiny_train_args(run, tiny_folder))
    assert res.exit_code == 0, res.output
    best, record = (run / "best.npz").read_bytes(), (run / "run.json").read_bytes()

    res = runner.invoke(app, tiny_train_args(run, tiny_folder))
    assert res.exit_code == 2
    assert f"{run} already holds a run" in res.stderr and "--resume" in res.stderr and "--overwrite" in res.stderr
    assert (run / "best.npz").read_bytes() == best and (run / "run.json").read_bytes() == record

    res = runner.invoke(app, [*tiny_train_args(run, tiny_folder), "--resume", "--overwrite"])
    assert res.exit_code == 2 and "pass one of them" in res.stderr
    assert (run / "best.npz").read_bytes() == best

    res = runner.invoke(app, [*tiny_train_args(run, tiny_folder), "--overwrite", "--seed", "5"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "run.json").read_text())["config"]["seed"] == 5
    assert (run / "best.npz").read_bytes() != best


def test_export_refuses_a_directory_that_is_not_a_run(runner, tmp_path):
    res = runner.invoke(app, ["export", str(tmp_path), str(tmp_path / "out")])
    assert res.exit_code == 2 and "is not a finished run" in res.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ without torch
BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
    sys.argv = ["edgemeta", *sys.argv[1:]]
    from edgemeta.cli import main
    main()
""")


def run_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def test_train_and_export_without_torch_name_the_extra(tmp_path, tiny_folder, shipped_bundle_dir):
    res = run_without_torch("train", "--out", str(tmp_path / "run"), "--data", str(tiny_folder), "--no-progress")
    assert res.returncode == 2, res.stderr
    assert TRAIN_EXTRA in res.stderr and "'torch'" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    res = run_without_torch("export", str(tmp_path / "run"), str(tmp_path / "bundle"))
    assert res.returncode == 2 and TRAIN_EXTRA in res.stderr and "Traceback" not in res.stderr
    # the device side never needs torch
    res = run_without_torch("inspect", str(shipped_bundle_dir))
    assert res.returncode == 0, res.stderr
    assert "verified" in res.stdout


# ------------------------------------------------------------------------------------------------ help
def test_no_args_lists_every_command(runner):
    res = runner.invoke(app, [])
    assert res.exit_code == 2                       # usage shown instead of running anything
    listed = set(re.findall(r"│ (\w+)\s", res.output))
    assert set(COMMANDS) <= listed


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_shows_plain_metavars(runner, cmd):
    text = help_text(runner, cmd)
    assert "<bool>" not in text and "<list[" not in text and "<path>" not in text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage


def test_predict_usage_and_json_fields(runner):
    text = help_text(runner, "predict")
    assert "Usage: edgemeta predict [OPTIONS] BUNDLE [IMAGES]..." in text   # IMAGES, or --csv for a regression bundle
    for field in ('"image"', '"label"', '"confidence"', '"max_logit"'):
        assert field in text
    assert "folder" in text.lower()                  # folders of images are accepted


@pytest.mark.parametrize("cmd", ["predict", "forget"])
def test_key_env_help_says_decrypt_where_it_reads(cmd):
    option = next(p for p in get_command(app).commands[cmd].params if p.name == "key_env")
    assert "decrypt" in option.help and "encrypt the state at rest" not in option.help


def test_train_help_every_option_explained_and_defaults_per_rule():
    from edgemeta.train.trainer import TrainConfig

    params = {p.name: p for p in get_command(app).commands["train"].params}
    for name, p in params.items():
        if name != "help":
            assert p.help, f"--{name} has no help"
    for rule in METHOD_SPECS:
        cfg = TrainConfig.for_method(rule)
        assert f"{rule} {cfg.max_episodes}" in params["episodes"].help
        assert f"{rule} {cfg.pretrain_steps}" in params["pretrain_steps"].help
        if cfg.method_kwargs:
            assert f"{rule} {json.dumps(cfg.method_kwargs)}" in params["method_kwargs"].help


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
    assert "parity check" in res.stderr and "done in" in res.stderr      # progress on stderr
    res = runner.invoke(app, ["eval", str(z), "--json", "--episodes", "200"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["accuracy"] > 75.0


def test_train_with_too_few_classes_after_the_split_says_how_they_were_split(runner, tmp_path, tiny_folder):
    args = tiny_train_args(tmp_path / "r", tiny_folder)
    args[args.index("--ways") + 1] = "5"
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert (f"{tiny_folder} has 6 classes: --val-fraction 0.15 sent 2 to validation (at least 2), leaving 4 for "
            f"meta-training; 5-way 1-shot 1-query meta-training episodes need 5 classes with at least 2 images "
            f"each, and the meta-training part has 4: lower --ways, or add classes") in res.stderr
    args = tiny_train_args(tmp_path / "r2", tiny_folder)
    args[args.index("--val-ways") + 1] = "3"
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "3-way 1-shot 15-query validation episodes need 3 classes with at least 16 images each, and the " \
           "validation part has 2: lower --val-ways or raise --val-fraction" in res.stderr
    assert not (tmp_path / "r" / "run.json").exists() and not (tmp_path / "r2" / "run.json").exists()


def test_train_refuses_empty_paths(runner, tmp_path, tiny_folder):
    args = tiny_train_args(tmp_path / "r", tiny_folder)
    args[args.index("--out") + 1] = ""
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "an empty path was given" in res.output and "--out" in res.output
    args = tiny_train_args(tmp_path / "r", tiny_folder)
    args[args.index("--data") + 1] = ""
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--data is empty; expected 'omniglot' or the path" in res.stderr
    res = runner.invoke(app, [*tiny_train_args(tmp_path / "r", tiny_folder), "--init-from", ""])
    assert res.exit_code == 2 and "an empty path was given" in res.output
    assert not (tmp_path / "r").exists()
