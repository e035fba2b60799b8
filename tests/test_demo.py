"""`edgemeta demo`: scikit-learn's digits learned from 5 samples each on the shipped bundle."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert res["state_bytes"] >= 10 * 5 * 64 * 4           # at least the 50 stored 64-d float32 embeddings
    assert {"adapt_ms_10way_embedding_included", "predict_ms_per_image"} <= set(res)   # timings: printed, not judged
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


def test_demo_without_omniglot_names_each_place_it_looked_once(shipped_bundle_dir, tmp_path, monkeypatch):
    """In a clone without ../shared, the working directory's parent and the checkout's parent are one
    place: the demo still runs and says where it looked for Omniglot, each place once."""
    import edgemeta.data.omniglot as omniglot
    from edgemeta.demo import run_demo

    clone = tmp_path / "clone"
    (clone / "edgemeta" / "data").mkdir(parents=True)
    monkeypatch.setattr(omniglot, "__file__", str(clone / "edgemeta" / "data" / "omniglot.py"))
    monkeypatch.delenv("EDGEMETA_OMNIGLOT", raising=False)
    monkeypatch.chdir(clone)
    logs: list[str] = []
    res = run_demo(shipped_bundle_dir, shots=5, draws=2, figure=None, log=logs.append)
    assert res["accuracy"] > 60.0 and "omniglot_rejected" not in res
    skipped = [line for line in logs if "unknown rejection skipped" in line]
    assert len(skipped) == 1 and "Omniglot not found" in skipped[0]
    assert skipped[0].count(str(tmp_path / "shared" / "data" / "omniglot")) == 1


def test_saved_digit_samples_through_adapt_and_predict(shipped_bundle_dir, tmp_path):
    """The README's device quick start: the demo's digits as PNG folders, learned and predicted by the CLI."""
    runner = CliRunner()
    res = runner.invoke(app, ["demo", "--save-samples", str(tmp_path / "digits")])
    assert res.exit_code == 0, res.output
    support, queries = tmp_path / "digits" / "support", tmp_path / "digits" / "queries"
    assert sorted(p.name for p in support.iterdir()) == ["0", "1", "2", "3"]
    assert all(len(list((support / d).glob("*.png"))) == 5 for d in "0123")
    assert len(list(queries.glob("*.png"))) == 12
    state = tmp_path / "me.state"
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(support), "--state", str(state)])
    assert res.exit_code == 0 and "4 classes" in res.stdout, res.output
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), str(queries), "--state", str(state), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 12
    right = sum(row["label"] == Path(row["image"]).name[len("digit")] for row in rows)
    assert right >= 9, rows                             # 4 classes: chance is 3 of 12
