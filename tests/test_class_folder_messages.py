"""A class-folder root given the images themselves (``--support digits/support/0``) says how to lay them out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgemeta.data.files import list_class_folders
from edgemeta.errors import InputError


def test_images_directly_in_the_root_are_named_with_the_layout(tmp_path: Path) -> None:
    for i in range(3):
        Image.fromarray(np.full((8, 8), 255 * (i % 2), np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(InputError, match=r"its 3 image file\(s\) sit directly in it: put each class's images in a "
                                         r"sub-folder named after the class \(root/<class>/<image files>\)"):
        list_class_folders(tmp_path)


def test_an_empty_root_gets_no_such_hint(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        list_class_folders(tmp_path)
    assert str(err.value) == (f"{tmp_path} holds no class folders with images (.png, .jpg, .jpeg, .bmp, .gif, .tif, "
                              ".tiff, .pgm, .ppm, .webp)")
