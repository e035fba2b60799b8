"""``edgemeta eval --figure``: one episode drawn as a PNG, each query framed green (right) or red
(wrong). The frames are read back from the PNG's pixels and compared with the runtime's own
predictions on the same episode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgemeta.cli import app
from edgemeta.data.episodes import EpisodeSampler
from edgemeta.evaluation import runtime_images
from edgemeta.runtime import Bundle, FewShotClassifier

pytest.importorskip("matplotlib", reason="the episode figure needs matplotlib (pip install 'edgemeta[demo]')")
from edgemeta.episode_figure import RIGHT, WRONG, draw_episode  # noqa: E402

SAMPLE_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-imagenet" / "sample" / "test"


@pytest.fixture(scope="module")
def photo_test_classes():
    if not SAMPLE_TEST.is_dir():
        pytest.skip(f"mini-ImageNet sample not found at {SAMPLE_TEST}")
    from edgemeta.data.photos import load_photo_folder

    return load_photo_folder(SAMPLE_TEST, (84, 84))


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])


def frame_colours(png: Path, frames: np.ndarray) -> list[str]:
    """'right' / 'wrong' / 'other' for each frame, from the PNG's pixels on its four edges' middles."""
    from PIL import Image

    px = np.asarray(Image.open(png).convert("RGB")).astype(int)
    out = []
    for left, top, right, bottom in frames:
        mx, my = (left + right) // 2, (top + bottom) // 2
        edge = np.stack([px[my, left], px[my, right - 1], px[top, mx], px[bottom - 1, mx]])
        kinds = {"right" if np.abs(c - _rgb(RIGHT)).max() < 40 else "wrong" if np.abs(c - _rgb(WRONG)).max() < 40
                 else "other" for c in edge}
        out.append(kinds.pop() if len(kinds) == 1 else "other")
    return out


def runtime_correct(bundle: Bundle, data, ways: int, shots: int, queries: int, seed: int) -> np.ndarray:
    """Episode 0 adapted and predicted by the runtime directly: bool [Q] right or wrong."""
    ep = EpisodeSampler(data, ways, shots, queries, seed).episode(0)
    names = np.asarray(data.names)[ep.classes]
    clf = FewShotClassifier(bundle).fit(runtime_images(ep.support_x), names[ep.support_y])
    return clf.predict(runtime_images(ep.query_x)) == names[ep.query_y]


def check_drawing(drawn, png: Path, expected_correct: np.ndarray, ways: int, shots: int, queries: int) -> None:
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == drawn.size
        assert 600 <= im.size[0] <= 3000 and 300 <= im.size[1] <= 3000
    assert png.stat().st_size > 20_000                          # pictures, not an empty canvas
    assert drawn.correct.shape == (ways * queries,) and len(drawn.classes) == ways
    np.testing.assert_array_equal(drawn.correct, expected_correct)
    np.testing.assert_array_equal(drawn.correct, drawn.predicted == drawn.true)
    colours = frame_colours(png, drawn.frames)
    assert colours.count("wrong") == int((~expected_correct).sum())   # one red frame per error
    assert colours.count("right") == int(expected_correct.sum())
    assert [c == "right" for c in colours] == list(expected_correct)


def test_photo_episode_marks_each_error_red(colour_bundle_dir, photo_test_classes, tmp_path):
    bundle = Bundle.load(colour_bundle_dir)
    png = tmp_path / "episode.png"
    drawn = draw_episode(bundle, photo_test_classes, 5, 3, 4, png, seed=3)
    expected = runtime_correct(bundle, photo_test_classes, 5, 3, 4, seed=3)
    assert 0 < expected.sum() < expected.size       # the untrained bundle gets some right and some wrong
    check_drawing(drawn, png, expected, 5, 3, 4)


def test_glyph_episode_is_drawn_too(shipped_bundle, vinyals_test, tmp_path):
    png = tmp_path / "glyphs.png"
    drawn = draw_episode(shipped_bundle, vinyals_test, 5, 1, 3, png, seed=0)
    check_drawing(drawn, png, runtime_correct(shipped_bundle, vinyals_test, 5, 1, 3, seed=0), 5, 1, 3)


def test_eval_figure_draws_the_first_evaluated_episode(colour_bundle_dir, photo_test_classes, tmp_path):
    png = tmp_path / "eval.png"
    res = CliRunner().invoke(app, ["eval", str(colour_bundle_dir), "--data", str(SAMPLE_TEST), "--ways", "5",
                                   "--shots", "2", "--queries", "3", "--episodes", "3", "--figure", str(png),
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    expected = runtime_correct(Bundle.load(colour_bundle_dir), photo_test_classes, 5, 2, 3, seed=0)
    assert out["figure"] == {"path": str(png), "episode": 0, "right": int(expected.sum()), "queries": 15}
    same = draw_episode(Bundle.load(colour_bundle_dir), photo_test_classes, 5, 2, 3, tmp_path / "again.png")
    assert [c == "right" for c in frame_colours(png, same.frames)] == list(expected)   # the CLI's own PNG
    res = CliRunner().invoke(app, ["eval", str(colour_bundle_dir), "--data", str(SAMPLE_TEST), "--shots", "2",
                                   "--queries", "3", "--episodes", "1", "--figure", str(png)])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-1] == f"figure: {png} (episode 0: {expected.sum()} of 15 queries right)"


def test_figure_without_matplotlib_names_the_extra_before_any_work(colour_bundle_dir, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)         # `import matplotlib` fails as when not installed
    png = tmp_path / "never.png"
    res = CliRunner().invoke(app, ["eval", str(colour_bundle_dir), "--data", str(tmp_path / "absent"),
                                   "--figure", str(png)])
    assert res.exit_code == 2
    assert "needs matplotlib" in res.stderr and "pip install 'edgemeta[demo]'" in res.stderr
    assert "absent" not in res.stderr and not png.exists()    # refused before the data was even looked at
