"""``tools/int8_speed.py``: the modes that need Omniglot say so (``error:`` line, exit status 2) instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", [["--requantise"], ["--both"], ["--accuracy", "10"]])
def test_modes_needing_omniglot_name_the_missing_files(tmp_path: Path, mode: list[str]) -> None:
    run = subprocess.run([sys.executable, str(REPO / "tools" / "int8_speed.py"), str(REPO / "models" / "omniglot-conv4-proto"),
                          *mode, "--omniglot", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr == (f"error: --requantise, --both and --accuracy need Omniglot: {tmp_path} has no "
                          "background.npz, evaluation.npz\n")
    assert run.stdout == ""
