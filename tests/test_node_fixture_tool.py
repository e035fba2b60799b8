"""``tools/node_fixture.py`` without Omniglot: a plain error, and the fixture folder left as it was.

The tool rewrites its output folder (the committed ``js/test/fixtures`` when run as js/README.md says);
on a machine without Omniglot it must stop before deleting anything, with the project's ``error:`` line
instead of a traceback. Needs no data: the test points it at an empty folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run_on_kept_folder(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the tool into a fixtures folder holding one file; returns the run and that folder."""
    out = tmp_path / "fixtures"
    out.mkdir()
    (out / "index.json").write_text('{"cases": []}\n', encoding="utf-8")
    run = subprocess.run([sys.executable, str(REPO / "tools" / "node_fixture.py"), str(out), *args],
                         capture_output=True, text=True, timeout=300)
    return run, out

def test_missing_omniglot_is_an_error_and_deletes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "no-omniglot"
    empty.mkdir()
    run, out = _run_on_kept_folder(tmp_path, "--omniglot", str(empty))
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: the fixtures need Omniglot"), run.stderr
    assert "Traceback" not in run.stderr
    assert str(empty) in run.stderr                                  # names where it looked
    assert (out / "index.json").read_text(encoding="utf-8") == '{"cases": []}\n'     # the folder is untouched
    assert sorted(p.name for p in out.iterdir()) == ["index.json"]


def test_missing_photos_is_an_error_and_deletes_nothing(tmp_path: Path, omniglot_root) -> None:
    """Without the sample photos the fixtures would lose their committed colour case: refused up front."""
    empty = tmp_path / "no-photos"
    empty.mkdir()
    run, out = _run_on_kept_folder(tmp_path, "--omniglot", str(omniglot_root), "--photos", str(empty))
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: the fixtures need the mini-ImageNet sample photos"), run.stderr
    assert str(empty) in run.stderr and "Traceback" not in run.stderr
    assert (out / "index.json").read_text(encoding="utf-8") == '{"cases": []}\n'
    assert sorted(p.name for p in out.iterdir()) == ["index.json"]
