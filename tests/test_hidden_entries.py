"""Hidden names in image folders (``.DS_Store``, macOS ``._x.png`` copies, ``.ipynb_checkpoints``) are not samples.

A folder a user copied from a Mac or opened in Jupyter holds them; the CLI read ``._x.png`` (an
AppleDouble file, not an image) and refused the whole folder, and took ``.ipynb_checkpoints`` as a class.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from edgemeta.contract.image_files import image_files_in, is_hidden
from edgemeta.data.files import list_class_folders
from edgemeta.errors import InputError

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "models" / "omniglot-conv4-proto"


def _glyph(path: Path, seed: int) -> None:
    """A 28x28 dark-on-white PNG with a random blob of ink."""
    a = np.full((28, 28), 255, np.uint8)
    r = np.random.default_rng(seed)
    y, x = r.integers(4, 16, 2)
    a[y:y + 10, x:x + 3] = 0
    a[y:y + 3, x:x + 10] = 0
    Image.fromarray(a).save(path)


def _mac_folder(root: Path) -> None:
    """Two classes of 2 glyphs each, plus the hidden entries a Mac or Jupyter leaves behind."""
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            _glyph(root / name / f"{i}.png", 10 * c + i)
        (root / name / f"._{0}.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
        (root / name / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / ".ipynb_checkpoints").mkdir()
    _glyph(root / ".ipynb_checkpoints" / "0.png", 99)


def test_listings_leave_hidden_names_out(tmp_path: Path) -> None:
    _mac_folder(tmp_path)
    assert [p.name for p in image_files_in(tmp_path / "a")] == ["0.png", "1.png"]
    assert [name for name, _ in list_class_folders(tmp_path)] == ["a", "b"]
    assert is_hidden(Path("x/._0.png")) and not is_hidden(Path(".x/0.png"))


def test_a_folder_of_only_hidden_classes_is_still_refused(tmp_path: Path) -> None:
    (tmp_path / ".ipynb_checkpoints").mkdir()
    _glyph(tmp_path / ".ipynb_checkpoints" / "0.png", 1)
    try:
        list_class_folders(tmp_path)
    except InputError as err:
        assert "holds no class folders with images" in str(err)
    else:
        raise AssertionError("a root with only a hidden class folder was accepted")


def test_cli_adapts_and_predicts_a_mac_copied_folder(tmp_path: Path) -> None:
    _mac_folder(tmp_path / "support")
    state = tmp_path / "s.state"
    cli = [sys.executable, "-m", "edgemeta.cli"]
    adapt = subprocess.run([*cli, "adapt", str(BUNDLE), "--support", str(tmp_path / "support"), "--state", str(state)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert adapt.returncode == 0, adapt.stderr
    assert "2 classes a (2), b (2)" in adapt.stdout
    predict = subprocess.run([*cli, "predict", str(BUNDLE), "--state", str(state), str(tmp_path / "support" / "a")],
                             capture_output=True, text=True, timeout=120, check=False)
    assert predict.returncode == 0, predict.stderr
    assert [line.split("\t")[0].rsplit("/", 1)[-1] for line in predict.stdout.splitlines()] == ["0.png", "1.png"]
    named = subprocess.run([*cli, "predict", str(BUNDLE), "--state", str(state), str(tmp_path / "support" / "a" / "._0.png")],
                           capture_output=True, text=True, timeout=120, check=False)
    assert named.returncode == 2 and named.stderr.startswith("error: ") and "._0.png" in named.stderr
