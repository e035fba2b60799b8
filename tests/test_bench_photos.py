"""``edgemeta bench`` on a colour bundle: the glyph figures with the bundle's own input shape, plus the
photo figures (embed one photo, adapt from JPEG files, a 4032x3024 JPEG, cold start from files).
Only keys, types and sanity are checked; timings are never asserted."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from edgemeta.cli import app


def _positive(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def colour_bench(colour_bundle_dir):
    res = CliRunner().invoke(app, ["bench", str(colour_bundle_dir), "--repeats", "2", "--cold-runs", "1", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_colour_bench_reports_the_glyph_figures_on_photo_shaped_input(colour_bench):
    r = colour_bench
    assert r["input"] == {"channels": 3, "size": [84, 84]}
    assert r["default_precision"] == "fp32" and list(r["cold_start"]) == ["fp32"]     # no int8 graph in this bundle
    cold = r["cold_start"]["fp32"]
    assert set(cold) >= {"import_ms", "load_ms", "first_answer_ms", "total_ms", "peak_rss_mb", "process_ms"}
    assert all(_positive(v) for v in cold.values())
    assert 20 < r["peak_rss_mb"] < 2000
    assert set(r["embed_ms_per_image"]["fp32"]) == {"1", "25"}
    assert set(r["adapt_ms"]) == {"5w1s", "5w5s", "20w5s"}
    assert all(_positive(v) for a in r["adapt_ms"].values() for v in a.values())
    assert _positive(r["predict_ms_per_image"])


def test_colour_bench_reports_the_photo_figures(colour_bench):
    ph = colour_bench["photos"]
    assert ph["photo_shape"][2] == 3 and min(ph["photo_shape"][:2]) >= 84
    assert ph["phone_jpeg"]["width"] == 4032 and ph["phone_jpeg"]["height"] == 3024
    assert ph["phone_jpeg"]["megabytes"] > 0.05          # a real encoded 12-megapixel JPEG, not an empty file
    assert list(ph["embed_ms_per_photo"]) == ["fp32"] and _positive(ph["embed_ms_per_photo"]["fp32"])
    for key in ("adapt_5w5s_from_files_ms", "phone_decode_preprocess_ms", "phone_predict_ms"):
        assert _positive(ph[key]), key
    assert ph["file_repeats"] == 2
    # the process adapted from files and predicted the large JPEG; its own peak, not the parent's
    assert 20 < ph["peak_rss_mb"] < 2000 and ph["peak_rss_mb"] == ph["cold_start"]["peak_rss_mb"]
    assert _positive(ph["cold_start"]["first_answer_ms"])


def test_colour_bench_text_names_the_photo_figures(colour_bundle_dir):
    res = CliRunner().invoke(app, ["bench", str(colour_bundle_dir), "--repeats", "1", "--cold-runs", "1"])
    assert res.exit_code == 0, res.output
    assert "colour 84x84" in res.stdout
    assert "adapt 5w5s from 25 JPEG files" in res.stdout and "4032x3024 JPEG" in res.stdout
    assert "cold start from files" in res.stdout


def test_grey_bench_has_no_photo_figures(shipped_bundle_dir):
    from edgemeta.bench import run_bench

    r = run_bench(str(shipped_bundle_dir), repeats=1, cold_runs=1)
    assert r["input"] == {"channels": 1, "size": [28, 28]} and "photos" not in r
    assert list(r["cold_start"]) == ["fp32", "int8"] and set(r["embed_ms_per_image"]) == {"fp32", "int8"}
