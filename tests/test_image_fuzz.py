"""The image-file fuzzer (tools/fuzz/image_fuzz.py): hostile mutants of real photos through
``decode_image`` (grey and colour) and a fitted colour classifier; none may escape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_image_fuzzer_finds_no_escape():
    """600 mutants, seed 0: each decodes to a well-formed array and prediction, or is an InputError;
    no hang over 10 s, and the run's (and the biggest mutant's) peak RSS growth stays under 500 MB."""
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "fuzz" / "image_fuzz.py"), "--mutants", "600",
                        "--seed", "0", "--json"], capture_output=True, text=True, timeout=1800,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["decoded"] + res["refused"] + res["escaped"] == 600 and res["decoded"] > 0 and res["refused"] > 0
    assert res["escaped"] == 0, res["escaped_examples"]
    assert res["rss_growth_mb"] < 500 and res["biggest_subprocess_growth_mb"] < 500


def test_colour_array_fuzz_finds_no_escape():
    """200 random arrays (dtypes, channels, shapes up to 3000 a side, NaN/inf, mixed lists) through
    the colour rule: each is a correct [N, 3, 84, 84] in [0, 1] (some compared with the oracle) or an
    InputError, and an input the rules refuse is never accepted."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("array_fuzz", ROOT / "tools" / "fuzz" / "array_fuzz.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    res = tool.run(200, 0, 10)
    assert res["escaped"] == 0, res["escaped_examples"]
    assert res["correct"] > 20 and res["refused"] > 20 and res["oracle_compared"] == 10
