"""`edgemeta demo`: scikit-learn's digits learned from 5 samples each on the shipped bundle."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgemeta.cli import app

pytest.importorskip("sklearn")


def test_run_demo_with_figure(shipped_bundle_dir, omniglot_root, tmp_path):
    pytest.importorskip("matplotlib")
    from edgemeta.demo import run_demo

    logs: list[str] = []
    fig = tmp_path / "demo.png"
    res = run_demo(shipped_bundle_dir, shots=5, draws=5, figure=fig, omniglot=omniglot_root, log=logs.append)
    json.dumps(res)                                          # JSON-serialisable, as `--json` prints it
    assert res["shots"] == 5 and res["draws"] == 5 and res["method"] == "proto"
    assert res["accuracy"] > 60.0, res["accuracy"]           # 10 classes: chance is 10 %
    assert 0.0 < res["ci95"] < 20.0
    curve = res["accuracy_by_shots"]
    assert sorted(curve, key=int) == [str(k) for k in range(1, 11)]
    assert curve["10"]["accuracy"] > curve["1"]["accuracy"]  # more shots help
    assert res["state_bytes"] > 0 and res["adapt_ms_10way_embedding_included"] > 0
    assert res["predict_ms_per_image"] > 0
    assert 0.0 <= res["digits_accepted"] <= 1.0 and 0.0 <= res["omniglot_rejected"] <= 1.0
    assert 0.5 < res["unknown_auroc"] <= 1.0
    assert res["figure"] == str(fig)
    data = fig.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    from PIL import Image

    with Image.open(fig) as im:
        assert im.width > im.height > 200
    assert any("learned 10 digits" in line for line in logs)


def test_demo_cli_json_without_figure(tmp_path, monkeypatch, omniglot_root):
    monkeypatch.chdir(tmp_path)                              # a figure would land here: there must be none
    res = CliRunner().invoke(app, ["demo", "--no-figure", "--draws", "3", "--json",
                                   "--omniglot", str(omniglot_root)])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    out = json.loads(lines[-1])
    assert out["draws"] == 3 and out["shots"] == 5
    assert out["accuracy"] > 60.0
    assert "figure" not in out
    assert list(tmp_path.iterdir()) == []
    assert any("learned 10 digits" in line for line in lines[:-1])


def test_demo_cli_on_a_missing_bundle(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--no-figure", "--draws", "1", "--bundle", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "bundle not found" in res.stderr
