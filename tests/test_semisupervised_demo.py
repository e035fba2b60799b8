"""The digits demo with unlabelled samples: 1 labelled + N unlabelled per digit, labelled-only vs refined
in the same draws, in its JSON and its figure; its saved samples through `adapt --unlabeled`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgemeta.cli import app

pytest.importorskip("sklearn")
REFINE = Path(__file__).resolve().parents[1] / "models" / "omniglot-conv4-proto-refine"


def test_demo_shows_what_unlabelled_digits_add(tmp_path):
    pytest.importorskip("matplotlib")
    from edgemeta.demo import DEFAULT_BUNDLE, UNLABELED_PER_DIGIT, run_demo

    assert DEFAULT_BUNDLE == REFINE
    logs: list[str] = []
    fig = tmp_path / "demo.png"
    res = run_demo(REFINE, shots=5, draws=4, figure=fig, omniglot=tmp_path / "no-omniglot", log=logs.append)
    json.dumps(res)
    semi = res["semi_supervised"]
    assert semi["labelled_per_digit"] == 1 and semi["draws"] == 20
    by = semi["by_unlabeled"]
    assert sorted(by, key=int) == [str(n) for n in UNLABELED_PER_DIGIT]
    assert by["0"]["refined"] == by["0"]["labelled"]                 # no unlabelled sample: the same head
    assert by["50"]["refined"] > by["50"]["labelled"] + 3            # measured: about +9 points
    assert any("1 labelled digit each plus unlabelled ones" in line for line in logs)
    from PIL import Image

    with Image.open(fig) as im:
        assert im.width > 3 * im.height                               # four panels side by side


def test_demo_without_a_refine_graph_says_so(tmp_path):
    from edgemeta.demo import run_demo

    logs: list[str] = []
    res = run_demo(REFINE.parent / "omniglot-conv4-proto", shots=1, draws=2, figure=None,
                   omniglot=tmp_path / "none", log=logs.append)
    assert "semi_supervised" not in res
    assert any("has no refine graph (edgemeta add-refine)" in line for line in logs)


def test_saved_unlabelled_digits_through_adapt(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["demo", "--save-samples", str(tmp_path / "d")]).exit_code == 0
    unlabeled = tmp_path / "d" / "unlabeled"
    assert len(list(unlabeled.glob("*.png"))) == 40
    state = tmp_path / "me.state"
    res = runner.invoke(app, ["adapt", str(REFINE), "--support", str(tmp_path / "d" / "support"),
                              "--unlabeled", str(unlabeled), "--state", str(state)])
    assert res.exit_code == 0 and "4 classes" in res.stdout, res.output
    res = runner.invoke(app, ["predict", str(REFINE), str(tmp_path / "d" / "queries"), "--state", str(state), "--json"])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert sum(r["label"] == Path(r["image"]).name[len("digit")] for r in rows) >= 9
