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


def test_missing_omniglot_is_an_error_and_deletes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fixtures"
    out.mkdir()
    kept = out / "index.json"
    kept.write_text('{"cases": []}\n', encoding="utf-8")
    empty = tmp_path / "no-omniglot"
    empty.mkdir()
    run = subprocess.run([sys.executable, str(REPO / "tools" / "node_fixture.py"), str(out), "--omniglot", str(empty)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: the fixtures need Omniglot"), run.stderr
    assert "Traceback" not in run.stderr
    assert str(empty) in run.stderr                                  # names where it looked
    assert kept.read_text(encoding="utf-8") == '{"cases": []}\n'     # the folder is untouched
    assert sorted(p.name for p in out.iterdir()) == ["index.json"]


def test_missing_photos_is_an_error_and_deletes_nothing(tmp_path: Path, omniglot_root) -> None:
    """Without the sample photos the fixtures would lose their committed colour case: refused up front."""
    out = tmp_path / "fixtures"
    out.mkdir()
    kept = out / "index.json"
    kept.write_text('{"cases": []}\n', encoding="utf-8")
    empty = tmp_path / "no-photos"
    empty.mkdir()
    run = subprocess.run([sys.executable, str(REPO / "tools" / "node_fixture.py"), str(out), "--omniglot",
                          str(omniglot_root), "--photos", str(empty)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: the fixtures need the mini-ImageNet sample photos"), run.stderr
    assert str(empty) in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["index.json"]
