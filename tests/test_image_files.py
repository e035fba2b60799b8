"""``read_image_file`` (``decode_image`` at full size): every file that cannot be decoded is an InputError
naming the file. Modes, orientation and JPEG draft decoding: tests/test_photo_files.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from edgemeta.contract.input_checks import MAX_PIXELS
from edgemeta.data.files import load_image_folder, read_image_file
from edgemeta.contract.preprocess import default_spec
from edgemeta.errors import InputError


@pytest.fixture
def png(tmp_path):
    p = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (25, 25), dtype=np.uint8)).save(p)   # ~700 bytes
    return p


def test_native_arrays(tmp_path, png):
    assert read_image_file(png).dtype == np.uint8 and read_image_file(png).shape == (25, 25)
    rgba = tmp_path / "c.png"
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(rgba)       # fully transparent black
    assert read_image_file(rgba).shape == (8, 8, 3) and (read_image_file(rgba) == 255).all()   # over white
    one = tmp_path / "b.png"
    Image.fromarray(np.eye(8, dtype=bool)).save(one)
    assert read_image_file(one).dtype == np.bool_


def test_undecodable_files(tmp_path, png):
    cases = {"empty.png": r"is empty \(0 bytes\);", "text.png": r"is not an image Pillow can read",
             "truncated.png": r"cannot be read as an image \(OSError: image file is truncated"}
    data = {"empty.png": b"", "text.png": b"not an image at all\n", "truncated.png": png.read_bytes()[:300]}
    for name, msg in cases.items():
        (tmp_path / name).write_bytes(data[name])
        with pytest.raises(InputError, match=rf"{name} {msg}.*expected an image file \(.png"):
            read_image_file(tmp_path / name)
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(InputError, match=r"folder.png is a folder; expected an image file"):
        read_image_file(tmp_path / "folder.png")
    with pytest.raises(InputError, match=r"missing.png: no such file or folder; expected an image file"):
        read_image_file(tmp_path / "missing.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(png):
    png.chmod(0)
    with pytest.raises(InputError, match=r"ok.png: permission denied; expected an image file"):
        read_image_file(png)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    side = int(MAX_PIXELS ** 0.5) + 1
    big = tmp_path / "big.png"
    Image.new("1", (side, side)).save(big, optimize=True)           # small on disk, 50 MP decoded
    with pytest.raises(InputError, match=rf"big.png is {side}x{side} \(50 megapixels\); expected at most 50"):
        read_image_file(big)


def test_a_bad_file_in_a_support_folder_names_it(tmp_path, png):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "1.png").write_bytes(png.read_bytes())
    (tmp_path / "b" / "notes.png").write_text("shopping list")
    with pytest.raises(InputError, match=r"b/notes.png is not an image Pillow can read"):
        load_image_folder(tmp_path, default_spec())
