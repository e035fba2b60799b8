"""Training data kept compact: bool pixels, float32 only for the rows a batch takes, same values as before."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from edgemeta.data.classes import ClassImages, add_rotations, compact_pixels
from edgemeta.data.episodes import EpisodeSampler
from edgemeta.data.omniglot import _load_all, load_omniglot
from edgemeta.errors import InputError

# sha256 of the float32 backbone input of every row, and of four 20-way 1-shot 5-query episodes
# (seed 3, episodes 0-3, support then query bytes), as computed by the loader that preprocessed
# all of Omniglot to float32 up front (before the data was kept as bool).
REFERENCE = {
    ("vinyals", "train", None): ("9dce8e804061439d2e0d8e4d99c05a6eac7f4c3a8daf96204e0a3404074522e9",
                                 "85ee7a3e88ca5bc87af7a48287a366c1156604c44ab37ab31c8c7f4da0b5a30a"),
    ("vinyals", "val", None): ("29514d63310244c981419132498cebb0c0f5854cc16c9ca709ad46e5d49653b9",
                               "9a4e59c2b77da440da68eee13be797ac92fbb877e10b29432df9339d841759b7"),
    ("vinyals", "test", None): ("23753cd4fb21f1882e69e07c7d2104b10bfca2a802117f45a229464ef6e017ba",
                                "25a1e488958e20bca5f2f74c8a95f39d54978cbd8c892613c786a24b3414b2d6"),
    ("vinyals", "test", True): ("8623e7c5926a6a99afcb949dcdaac83043b166d2e81fda7ab813f2ce234d9b26",
                                "19b10c7a7db8245dc33567f3c237e29f361118e053693f96aa5c5c489a9bad13"),
    ("lake", "train", None): ("c6d8dfc2537081fba0c3f7cafb4df033fa564c35d26d799fc140324dce359873",
                              "ec94209d5a41bdcd0c9aa4041f2df92f13871d9e3122533deb250ef08baa1538"),
    ("lake", "test", True): ("de15ea45d9f0bb7b425c83ef869c28aac56506b2e97ab4320bb5b606dc13f92d",
                             "050ddbe375763edfe2453127955310fc0a4e985461e670c1af08186588fe55c8"),
}


def _sha_of_rows(data: ClassImages, chunk: int = 8192) -> str:
    """sha256 of ``data``'s float32 input, all rows in order, converted ``chunk`` rows at a time."""
    h = hashlib.sha256()
    for i in range(0, data.n_images, chunk):
        h.update(data.batch(slice(i, i + chunk)).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("split,part,rotations", list(REFERENCE))
def test_backbone_input_is_bit_identical_to_the_float_loader(omniglot_root, split, part, rotations):
    data = load_omniglot(split, part, omniglot_root, rotations=rotations)
    all_rows, episodes = REFERENCE[(split, part, rotations)]
    assert _sha_of_rows(data) == all_rows
    sampler, h = EpisodeSampler(data, 20, 1, 5, seed=3), hashlib.sha256()
    for e in range(4):
        ep = sampler.episode(e)
        h.update(ep.support_x.tobytes())
        h.update(ep.query_x.tobytes())
    assert h.hexdigest() == episodes


def test_omniglot_is_held_as_bool_rotations_included(omniglot_root):
    train = load_omniglot("vinyals", "train", omniglot_root)          # 1,028 characters x 4 rotations
    assert train.pixels.dtype == np.bool_ and train.pixels.shape == (82240, 1, 28, 28)
    assert train.pixels.nbytes == 82240 * 28 * 28                      # 64 MB, not 258 MB of float32
    cached = _load_all(str(omniglot_root.resolve()), (28, 28))
    assert cached["images"].dtype == np.bool_ and cached["images"].shape == (1623, 20, 1, 28, 28)
    rows = np.array([5, 81000, 17])
    x = train.batch(rows)
    assert x.dtype == np.float32 and x.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(x, train.pixels[rows].astype(np.float32))


def test_compact_pixels_keeps_exact_values():
    binary = np.zeros((3, 1, 4, 4), np.float32)
    binary[0, 0, 1, 2] = 1.0
    assert compact_pixels(binary).dtype == np.bool_
    assert compact_pixels(binary).astype(np.float32).tobytes() == binary.tobytes()
    grey = binary.copy()
    grey[1, 0, 0, 0] = 0.5
    assert compact_pixels(grey).dtype == np.float32
    negative_zero = binary.copy()
    negative_zero[2, 0, 3, 3] = -0.0                 # equal to 0.0 but not the same bits: stays float
    assert compact_pixels(negative_zero).dtype == np.float32
    data = ClassImages.from_lists([binary[:2], grey[1:]], ["a", "b"])
    assert data.pixels.dtype == np.float32                           # one grey image keeps the set float
    np.testing.assert_array_equal(data.images, np.concatenate([binary[:2], grey[1:]]))
    rotated = add_rotations(ClassImages.from_grouped(binary[None], ["a"]))
    assert rotated.pixels.dtype == np.bool_ and rotated.n_images == 12
    np.testing.assert_array_equal(rotated.batch(slice(3, 6)), np.rot90(binary, 1, axes=(2, 3)))
    with pytest.raises(InputError, match="pixels must be bool, uint8 or float32, got int64"):
        ClassImages(np.zeros((1, 1, 4, 4), np.int64), np.zeros(1, np.int64), np.ones(1, np.int64), ("a",),
                    np.zeros(1, np.int64))


def _write_npz(path, images, n_chars: int) -> None:
    np.savez_compressed(path, images=images, alphabet=np.array(["A"] * n_chars),
                        character=np.arange(1, n_chars + 1, dtype=np.int16),
                        char_id=np.arange(1, n_chars + 1, dtype=np.int16))


def test_malformed_omniglot_files_are_input_errors(tmp_path):
    _write_npz(tmp_path / "background.npz", np.zeros((2, 20, 105, 105), np.float64), 2)
    _write_npz(tmp_path / "evaluation.npz", np.zeros((1, 20, 105, 105), np.uint8), 1)
    with pytest.raises(InputError, match=r"background.npz: images are float64 \(2, 20, 105, 105\); expected "
                                         r"C-ordered uint8 0/1"):
        load_omniglot("lake", "test", tmp_path)
    good = tmp_path / "good.npz"
    _write_npz(good, np.zeros((2, 20, 105, 105), np.uint8), 2)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "background.npz", "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data[: len(data) // 2] if name == "images.npy" else data)
    with pytest.raises(InputError, match="background.npz: images end after 0 of 40 drawings; the file is truncated"):
        load_omniglot("lake", "test", tmp_path)


PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from edgemeta.data.episodes import EpisodeSampler
    from edgemeta.data.omniglot import load_omniglot
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    train = load_omniglot("vinyals", "train", sys.argv[1])
    test = load_omniglot("vinyals", "test", sys.argv[1], rotations=True)
    for data in (train, test):
        EpisodeSampler(data, 20, 1, 15).episode(0)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
""")


def test_loading_omniglot_stays_far_below_the_float_footprint(omniglot_root):
    """All 1,623 characters loaded, Vinyals train (x4 rotations) and test (x4) built: the peak RSS
    growth stays under 300 MB (it was about 2.1 GB when the 105x105 drawings became float32 first)."""
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(omniglot_root)], capture_output=True, text=True,
                         timeout=120, check=True)
    assert int(out.stdout.strip()) < 300
