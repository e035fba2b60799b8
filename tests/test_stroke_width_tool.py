"""``tools/stroke_width.py``: its drawings and the effect docs/inputs.md states (thin pens vanish under ``nearest``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from edgemeta.contract.preprocess import default_spec, preprocess

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("stroke_width", REPO / "tools" / "stroke_width.py")
stroke_width = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stroke_width)


def test_drawings_are_dark_ink_on_white() -> None:
    for kind in stroke_width.KINDS:
        im = stroke_width.draw(kind, 105, 5, np.random.default_rng(0))
        assert im.shape == (105, 105) and im.dtype == np.uint8
        assert im[0, 0] == 255 and 0.02 < (im < 128).mean() < 0.5, kind


def test_a_thin_pen_loses_its_strokes_in_the_nearest_resize() -> None:
    """At 28x28 a 300 px circle keeps most of its ring with a 24 px pen and most of it vanishes with a 4 px pen."""
    rng = np.random.default_rng(1)
    thin = preprocess([stroke_width.draw("circle", 300, 4, rng, jitter=0)], default_spec(), ink="auto")
    wide = preprocess([stroke_width.draw("circle", 300, 24, rng, jitter=0)], default_spec(), ink="auto")
    assert thin.shape == wide.shape == (1, 1, 28, 28)
    assert (thin > 0.5).sum() < 0.5 * (wide > 0.5).sum()


def test_main_prints_every_setting(capsys) -> None:
    assert stroke_width.main([str(REPO / "models" / "omniglot-conv4-proto"), "--draws", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(stroke_width.SETTINGS)
    for line in lines:
        acc = float(line.split("accuracy ")[1].split(" %")[0])
        assert 0.0 <= acc <= 100.0
