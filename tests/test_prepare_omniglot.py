"""Official-layout Omniglot zips/folders -> background.npz / evaluation.npz, checked against the shared copy."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

from edgemeta.data.omniglot import _stream_rows, load_omniglot
from edgemeta.data.prepare_omniglot import file_md5, main, prepare
from edgemeta.errors import InputError

BACKGROUND_ROWS = [500, 0, 1, 963]          # deliberately out of char_id order
EVALUATION_ROWS = [3, 658]


def png(drawing: np.ndarray) -> bytes:
    """uint8 0/1 drawing (1 = ink) as the official files store it: 1-bit PNG, black ink on white."""
    buf = io.BytesIO()
    Image.fromarray(drawing == 0).save(buf, format="PNG")         # mode "1": True = white paper
    return buf.getvalue()


def raw_rows(npz, rows: list[int]) -> dict[str, np.ndarray]:
    """``rows`` of a shared class-grouped file, in ``rows`` order (images streamed, never all decoded)."""
    wanted, images = set(rows), {}
    for i, chunk in enumerate(_stream_rows(npz, chunk_rows=20)):     # one character per chunk
        if i in wanted:
            images[i] = chunk.copy()
    with np.load(npz) as z:
        return {"images": np.stack([images[r] for r in rows]),
                **{k: z[k][rows] for k in ("alphabet", "character", "char_id")}}


def official_members(npz, kind: str, rows: list[int]) -> dict[str, bytes]:
    """``images_<kind>/<Alphabet>/characterNN/XXXX_YY.png`` -> PNG bytes for the given rows."""
    z = raw_rows(npz, rows)
    return {f"images_{kind}/{z['alphabet'][i]}/character{z['character'][i]:02d}/{z['char_id'][i]:04d}_{y + 1:02d}.png":
            png(z["images"][i, y]) for i in range(len(rows)) for y in range(20)}


def write_zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members, reverse=True):                     # member order must not matter
            zf.writestr(name, members[name])


def expected_rows(npz, rows: list[int]) -> dict[str, np.ndarray]:
    """The rows in char_id order, as the converter must write them."""
    return raw_rows(npz, sorted(rows))


@pytest.fixture(scope="module")
def official_zips(omniglot_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    bg, ev = d / "images_background.zip", d / "images_evaluation.zip"
    write_zip(bg, official_members(omniglot_root / "background.npz", "background", BACKGROUND_ROWS))
    write_zip(ev, official_members(omniglot_root / "evaluation.npz", "evaluation", EVALUATION_ROWS))
    return bg, ev


def assert_same_rows(got_path, want: dict[str, np.ndarray]) -> None:
    with np.load(got_path, allow_pickle=False) as got:
        assert got["images"].dtype == np.uint8 and got["images"].shape == want["images"].shape
        np.testing.assert_array_equal(got["images"], want["images"])
        assert got["alphabet"].tolist() == want["alphabet"].tolist()
        assert got["character"].dtype == got["char_id"].dtype == np.int16
        np.testing.assert_array_equal(got["character"], want["character"])
        np.testing.assert_array_equal(got["char_id"], want["char_id"])


def test_zips_become_the_rows_of_the_shared_files(official_zips, omniglot_root, tmp_path):
    bg, ev = official_zips
    published = {"images_background": file_md5(bg), "images_evaluation": file_md5(ev)}
    written = prepare([bg, ev], tmp_path / "out", published=published)
    assert written == {str(tmp_path / "out" / "background.npz"): 4, str(tmp_path / "out" / "evaluation.npz"): 2}
    assert_same_rows(tmp_path / "out" / "background.npz", expected_rows(omniglot_root / "background.npz", BACKGROUND_ROWS))
    assert_same_rows(tmp_path / "out" / "evaluation.npz", expected_rows(omniglot_root / "evaluation.npz", EVALUATION_ROWS))
    # edgemeta reads the result: the Lake test part is the evaluation characters, same pixels as the shared copy
    mine = load_omniglot("lake", "test", tmp_path / "out", rotations=False)
    shared = load_omniglot("lake", "test", omniglot_root, rotations=False).subset(sorted(EVALUATION_ROWS))
    assert mine.names == shared.names
    np.testing.assert_array_equal(mine.pixels, shared.pixels)


def test_unzipped_folders_with_no_verify(official_zips, omniglot_root, tmp_path, capsys):
    bg, _ = official_zips
    with zipfile.ZipFile(bg) as zf:
        zf.extractall(tmp_path / "unzipped")
    (tmp_path / "unzipped" / "images_background" / ".DS_Store").write_bytes(b"\0" * 64)   # archiver junk is skipped
    folder = tmp_path / "unzipped" / "images_background"
    assert main([str(folder), "--out", str(tmp_path / "out")]) == 2
    assert "is a folder, which cannot be checked against the published md5" in capsys.readouterr().err
    assert main([str(folder), "--out", str(tmp_path / "out"), "--no-verify"]) == 0
    out = capsys.readouterr()
    assert "background.npz: 4 characters x 20 drawings" in out.out and "no evaluation.npz yet" in out.err
    assert_same_rows(tmp_path / "out" / "background.npz", expected_rows(omniglot_root / "background.npz", BACKGROUND_ROWS))


def test_checksum_mismatch_is_refused(official_zips, tmp_path, capsys):
    bg, _ = official_zips
    with pytest.raises(InputError, match=r"md5 [0-9a-f]{32} is not the published one \(images_background.zip "
                                         r"68d2efa1b9178cc56df9314c21c6e718, images_evaluation.zip "
                                         r"6b91aef0f799c5bb55b94e3f2daec811\)"):
        prepare([bg], tmp_path / "out")
    assert main([str(bg), "--out", str(tmp_path / "out")]) == 2
    assert "is not the published one" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main([str(bg), "--out", str(tmp_path / "out"), "--no-verify"]) == 0


GOOD = "images_background/Greek/character01/0001_01.png"


@pytest.mark.parametrize("name,data,message", [
    ("images_background/../../etc/0001_01.png", None, "unsafe member name"),
    ("/images_background/Greek/character01/0001_01.png", None, "unsafe member name"),
    ("images_background\\Greek\\character01\\0001_01.png", None, "unsafe member name"),
    ("images_background/Greek/character01/notes.txt", b"hello", "unexpected member"),
    (GOOD, b"GIF89a not a png", "not a PNG file"),
    (GOOD, "small", r"a 100x100 image; expected 105x105"),
    (GOOD, "broken", "unreadable PNG"),
    (GOOD, "huge", "unpacks to 70008 bytes, more than 65536"),
    ("images_background/Greek/character01/0001_21.png", None, "is drawing 21; expected drawings 01..20"),
])
def test_hostile_members_end_in_input_error(tmp_path, name, data, message):
    drawing = np.zeros((105, 105), np.uint8)
    members = {f"images_background/Greek/character01/0001_{y:02d}.png": png(drawing) for y in range(1, 21)}
    if data == "small":
        data = png(np.zeros((100, 100), np.uint8))
    elif data == "broken":
        data = png(drawing)[:40]
    elif data == "huge":
        data = b"\x89PNG\r\n\x1a\n" + b"\0" * 70_000
    members[name] = png(drawing) if data is None else data
    write_zip(tmp_path / "hostile.zip", members)
    with pytest.raises(InputError, match=message):
        prepare([tmp_path / "hostile.zip"], tmp_path / "out", verify=False)
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_incomplete_or_inconsistent_characters(tmp_path):
    drawing = png(np.zeros((105, 105), np.uint8))
    members = {f"images_background/Greek/character01/0001_{y:02d}.png": drawing for y in range(1, 20)}
    write_zip(tmp_path / "a.zip", members)
    with pytest.raises(InputError, match=r"character 0001 \(Greek/character01\) lacks drawings \[20\]"):
        prepare([tmp_path / "a.zip"], tmp_path / "out", verify=False)
    members["images_background/Latin/character02/0001_20.png"] = drawing
    write_zip(tmp_path / "b.zip", members)
    with pytest.raises(InputError, match="character id 0001 appears in (Greek/character01 and in Latin/character02|"
                                         "Latin/character02 and in Greek/character01)"):
        prepare([tmp_path / "b.zip"], tmp_path / "out", verify=False)
    (tmp_path / "c.zip").write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match="not a readable zip"):
        prepare([tmp_path / "c.zip"], tmp_path / "out", verify=False)
    with pytest.raises(InputError, match="no such file or folder"):
        prepare([tmp_path / "missing.zip"], tmp_path / "out", verify=False)


def test_memory_stays_per_character(tmp_path):
    """60 characters (13 MB of output pixels) convert with a Python-heap peak of a few MB:
    drawings are decoded and written one character at a time."""
    rng = np.random.default_rng(0)
    members = {f"images_background/Alpha{c // 50}/character{c % 50 + 1:02d}/{c:04d}_{y:02d}.png":
               png((rng.random((105, 105)) < 0.1).astype(np.uint8)) for c in range(1, 61) for y in range(1, 21)}
    write_zip(tmp_path / "big.zip", members)
    tracemalloc.start()
    try:
        prepare([tmp_path / "big.zip"], tmp_path / "out", verify=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    with np.load(tmp_path / "out" / "background.npz") as z:
        assert z["images"].shape == (60, 20, 105, 105) and z["images"].nbytes > 13e6
    assert peak < 4e6, f"peak {peak / 1e6:.1f} MB"


def _character_members() -> dict[str, bytes]:
    drawing = png(np.zeros((105, 105), np.uint8))
    return {f"images_background/Greek/character01/0001_{y:02d}.png": drawing for y in range(1, 21)}


def _corrupt_first_member(path) -> None:
    """Flip a byte inside the first member's compressed data (its CRC no longer matches)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[0]
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_damaged_members_fifos_and_bad_out_paths_are_input_errors(tmp_path, capsys):
    import os

    write_zip(tmp_path / "crc.zip", _character_members())
    _corrupt_first_member(tmp_path / "crc.zip")
    with pytest.raises(InputError, match="cannot be unpacked"):
        prepare([tmp_path / "crc.zip"], tmp_path / "out", verify=False)
    folder = tmp_path / "images_background" / "Greek" / "character01"
    folder.mkdir(parents=True)
    for name, data in _character_members().items():
        (tmp_path / name).write_bytes(data)
    (folder / "0001_20.png").unlink()
    os.mkfifo(folder / "0001_20.png")                  # must not block the converter
    with pytest.raises(InputError, match="not a regular file"):
        prepare([tmp_path / "images_background"], tmp_path / "out", verify=False)
    write_zip(tmp_path / "ok.zip", _character_members())
    (tmp_path / "afile").write_text("x")
    assert main([str(tmp_path / "ok.zip"), "--out", str(tmp_path / "afile"), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "expected --out to be a folder" in err and "Traceback" not in err
