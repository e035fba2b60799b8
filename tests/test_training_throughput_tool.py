"""``tools/training_throughput.py`` without Omniglot: the ``error:`` line naming what is missing, exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_folder_without_omniglot_is_named_not_a_traceback(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(REPO / "tools" / "training_throughput.py"), "--omniglot", str(tmp_path),
                          "--episodes", "1", "--procs", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(f"error: {tmp_path} has no background.npz, evaluation.npz"), run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
