"""predict's memory is bounded by design: chunks of preprocessed pixels, never all N at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "input_memory.py"


@pytest.mark.slow                                # about 20 s per case on one core
@pytest.mark.parametrize("case", ["array", "list"])
def test_predict_on_many_small_images_stays_within_a_bound(shipped_bundle_dir, case):
    """150,000 4x4 images: preprocessed all at once they took 150,000 x 28 x 28 x 4 bytes = 470 MB and more."""
    out = subprocess.run([sys.executable, str(TOOL), "--case", case, "--n", "150000", "--bundle",
                          str(shipped_bundle_dir)], check=True, capture_output=True, text=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""})
    r = json.loads(out.stdout)
    assert r["result"] == "150000 labels"
    assert r["peak_over_input_mb"] < 300, r
