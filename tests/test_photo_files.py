"""``decode_image``: real photos in every Pillow mode, EXIF orientation, JPEG draft decoding, the pixel
limit from the header, and every undecodable source an InputError naming it (no warnings leak)."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgemeta.contract.image_files import decode_image, image_array
from edgemeta.contract.preprocess import colour_to_grey
from edgemeta.errors import InputError

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-imagenet" / "sample"


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real 84x84 RGB photo from the mini-ImageNet sample."""
    files = sorted((SAMPLE / "test").glob("*/*.jpg")) if SAMPLE.is_dir() else []
    if not files:
        pytest.skip(f"mini-ImageNet sample not found at {SAMPLE} (see ../shared/data/mini-imagenet/README.md)")
    with Image.open(files[0]) as im:
        return im.convert("RGB")


def saved(im: Image.Image, path: Path, fmt: str, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


def composite(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The spec's integer rule, written out independently: (c*a + 255*(255-a) + 127) // 255."""
    c, a = c.astype(np.int64), a.astype(np.int64)
    if c.ndim == 3:
        a = a[..., None]
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def rgba_of(photo: Image.Image) -> Image.Image:
    """The photo with a real, varied alpha: its own green channel (0..255 across the picture)."""
    im = photo.copy()
    im.putalpha(photo.getchannel("G"))
    return im


# ------------------------------------------------------------------------------------- modes
def test_grey_modes(photo, tmp_path):
    one = photo.convert("1")
    got = decode_image(saved(one, tmp_path / "one.png", "PNG"), None, 3)
    assert got.dtype == np.bool_ and np.array_equal(got, np.asarray(one))
    grey = photo.convert("L")
    got = decode_image(saved(grey, tmp_path / "l.png", "PNG"), None, 3)
    assert got.dtype == np.uint8 and got.shape == (84, 84) and np.array_equal(got, np.asarray(grey))


def test_grey_with_alpha_is_composited_over_white(photo, tmp_path):
    la = Image.merge("LA", (photo.convert("L"), photo.getchannel("G")))
    got = decode_image(saved(la, tmp_path / "la.png", "PNG"), None, 3)
    a = np.asarray(la)
    assert got.shape == (84, 84) and np.array_equal(got, composite(a[..., 0], a[..., 1]))
    assert not np.array_equal(got, a[..., 0])                    # the alpha did something


def test_rgba_is_composited_over_white(photo, tmp_path):
    rgba = rgba_of(photo)
    a = np.asarray(rgba)
    want = composite(a[..., :3], a[..., 3])
    got = decode_image(saved(rgba, tmp_path / "c.png", "PNG"), None, 3)
    assert got.shape == (84, 84, 3) and np.array_equal(got, want)
    # a 1-channel bundle gets the runtime's grey of the same composite
    assert np.array_equal(decode_image(tmp_path / "c.png", None, 1), colour_to_grey(a))
    assert np.array_equal(colour_to_grey(a), colour_to_grey(want))


def test_palette_modes(photo, tmp_path):
    p = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    got = decode_image(saved(p, tmp_path / "p.png", "PNG"), None, 3)
    assert np.array_equal(got, np.asarray(p.convert("RGB")))
    # a palette entry marked transparent (GIF's way) becomes white
    p.info["transparency"] = int(np.asarray(p)[0, 0])
    got = decode_image(saved(p, tmp_path / "t.gif", "GIF", transparency=p.info["transparency"]), None, 3)
    back = np.asarray(Image.open(tmp_path / "t.gif").convert("RGBA"))
    assert np.array_equal(got, composite(back[..., :3], back[..., 3]))
    assert (got[np.asarray(p) == p.info["transparency"]] == 255).all()
    pa = rgba_of(photo).convert("P").convert("PA")
    pa.putalpha(photo.getchannel("B"))
    got = decode_image(saved(pa, tmp_path / "pa.tif", "TIFF"), None, 3)
    a = np.asarray(pa.convert("RGBA"))
    assert np.array_equal(got, composite(a[..., :3], a[..., 3]))


@pytest.mark.parametrize("mode,fmt", [("CMYK", "TIFF"), ("CMYK", "JPEG"), ("YCbCr", "TIFF"), ("LAB", "TIFF")])
def test_other_colour_spaces_convert_to_rgb(photo, tmp_path, mode, fmt):
    path = saved(photo.convert(mode), tmp_path / f"x.{fmt.lower()}", fmt)
    with Image.open(path) as stored:
        assert stored.mode == mode
        want = np.asarray(stored.convert("RGB"))
    got = decode_image(path, None, 3)
    assert got.dtype == np.uint8 and got.shape == (84, 84, 3) and np.array_equal(got, want)


def test_hsv_converts_to_rgb(photo):
    # no file format Pillow writes holds HSV, so the mode rule is checked on the decoded image itself
    hsv = photo.convert("HSV")
    assert np.array_equal(image_array(hsv, 3, "hsv"), np.asarray(hsv.convert("RGB")))


def sixteen_bit(photo: Image.Image) -> np.ndarray:
    """uint16 grey from the photo with low bytes that must be dropped (v >> 8 recovers the photo)."""
    g = np.asarray(photo.convert("L")).astype(np.uint16)
    return g * 256 + (np.arange(g.size, dtype=np.uint16).reshape(g.shape) % 256)


def test_sixteen_bit_modes(photo, tmp_path):
    v = sixteen_bit(photo)
    want = np.asarray(photo.convert("L"))
    png = tmp_path / "16.png"
    Image.fromarray(v).save(png)                                  # a 16-bit PNG
    big = tmp_path / "16b.tif"
    Image.frombytes("I;16B", v.shape[::-1], v.astype(">u2").tobytes()).save(big)
    ppm = tmp_path / "16.pgm"
    Image.fromarray(v).save(ppm)                                  # maxval 65535: opens as mode I
    for path, mode in ((png, "I;16"), (big, "I;16B"), (ppm, "I")):
        with Image.open(path) as im:
            assert im.mode == mode, path
        got = decode_image(path, None, 3)
        assert got.dtype == np.uint8 and np.array_equal(got, want), mode


def test_32_bit_integers_are_clipped_and_float_is_refused(tmp_path):
    v = np.array([[-70000, -1, 0, 255], [256, 65535, 65536, 2_000_000]] * 2, np.int32)
    path = tmp_path / "i.tif"
    Image.fromarray(v, "I").save(path)
    got = decode_image(path, None, 3)
    assert got.tolist() == [[0, 0, 0, 0], [1, 255, 255, 255]] * 2
    Image.fromarray(np.full((8, 8), 0.5, np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(InputError, match=r"f.tif holds 32-bit float pixels \(mode F\); expected 1-bit, 8-bit"):
        decode_image(tmp_path / "f.tif", None, 3)


def test_one_channel_bundles_get_grey(photo, tmp_path):
    path = saved(photo, tmp_path / "rgb.png", "PNG")
    got = decode_image(path, None, 1)
    assert got.shape == (84, 84) and np.array_equal(got, colour_to_grey(np.asarray(photo)))
    assert np.array_equal(decode_image(path, None, 3), np.asarray(photo))
    with pytest.raises(InputError, match="channels must be 1 .* or 3"):
        decode_image(path, None, 2)


# ----------------------------------------------------------------------------------- orientation
@pytest.mark.parametrize("orientation,turns", [(6, -1), (3, 2), (8, 1)])
def test_exif_orientation_is_honoured(photo, tmp_path, orientation, turns):
    wide = photo.resize((120, 84))                                # not square: a wrong turn changes the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    png = saved(wide, tmp_path / "o.png", "PNG", exif=exif)
    assert np.array_equal(decode_image(png, None, 3), np.rot90(np.asarray(wide), turns))
    jpg = saved(wide, tmp_path / "o.jpg", "JPEG", exif=exif, quality=95)
    with Image.open(jpg) as im:
        stored = np.asarray(im.convert("RGB"))
    assert np.array_equal(decode_image(jpg, None, 3), np.rot90(stored, turns))
    assert np.array_equal(decode_image(jpg.read_bytes(), None, 3), np.rot90(stored, turns))


# ------------------------------------------------------------------------------------ JPEG draft
@pytest.fixture(scope="module")
def phone_jpeg(photo, tmp_path_factory) -> Path:
    """A 4032x3024 (12-megapixel) JPEG made by upscaling the real photo."""
    path = tmp_path_factory.mktemp("phone") / "IMG_0001.JPG"
    photo.resize((4032, 3024), Image.Resampling.BILINEAR).save(path, "JPEG", quality=90)
    return path


def test_jpeg_is_decoded_at_the_smallest_size_covering_the_target(phone_jpeg):
    full = decode_image(phone_jpeg, None, 3)
    assert full.shape == (3024, 4032, 3)
    small = decode_image(phone_jpeg, (84, 84), 3)
    assert small.shape == (378, 504, 3)                           # the 1/8 DCT scale
    assert min(small.shape[:2]) >= 84                             # its 378x378 centre crop covers 84x84
    # a larger target gets the scale that still covers it
    assert decode_image(phone_jpeg, (512, 512), 3).shape == (756, 1008, 3)
    # the reduced decode is the same picture: its mean colour is the full one's within a few levels
    assert np.abs(small.mean((0, 1)) - full.mean((0, 1))).max() < 2.0


def test_draft_size_follows_the_exif_orientation(photo, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6                                              # stored 4000x1000, shown 1000 wide x 4000 high
    path = saved(photo.resize((4000, 1000)), tmp_path / "turned.jpg", "JPEG", exif=exif)
    got = decode_image(path, (500, 84), 3)
    assert got.shape == (500, 125, 3)                             # 1/8: shown 500 high, 125 wide >= 500x84


def test_grey_bundles_decode_jpegs_in_full_as_version_1_did(phone_jpeg):
    """Grey bundles sample the full image with ``nearest``: a reduced decode would change what the
    shipped version-1 bundles answer for a JPEG file, so for them a file equals its full pixels."""
    from edgemeta.contract.preprocess import colour_to_grey, default_spec, preprocess

    assert decode_image(phone_jpeg, (28, 28), 1).shape == (3024, 4032)
    with Image.open(phone_jpeg) as im:
        full = colour_to_grey(np.asarray(im.convert("RGB")))
    spec = default_spec()
    assert np.array_equal(preprocess([phone_jpeg], spec, ink="auto"), preprocess([full], spec, ink="auto"))


def test_heic_photos_are_named_and_never_left_out(tmp_path):
    from edgemeta.data.files import list_class_folders

    heic = b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64           # an iPhone photo's first bytes
    with pytest.raises(InputError, match="HEIC/HEIF or AVIF image .*convert it to JPEG or PNG"):
        decode_image(heic, (84, 84), 3)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "IMG_0001.HEIC").write_bytes(heic)
    [(name, files)] = list_class_folders(tmp_path)
    assert name == "cat" and [f.name for f in files] == ["IMG_0001.HEIC"]
    with pytest.raises(InputError, match="IMG_0001.HEIC is a HEIC/HEIF"):
        decode_image(files[0], (84, 84), 3)


def test_pngs_are_never_reduced(photo, tmp_path):
    path = saved(photo.resize((400, 300)), tmp_path / "p.png", "PNG")
    assert decode_image(path, (84, 84), 3).shape == (300, 400, 3)


# ----------------------------------------------------------------------------------- pixel limit
def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` RGB and holds one empty IDAT: nothing is allocated."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width,height,message", [
    (60000, 60000, r"is a 3600-megapixel image; expected at most 50 megapixels"),     # Pillow: a bomb
    (10000, 10000, r"is a 100-megapixel image; expected at most 50 megapixels"),      # Pillow: a warning
    (8000, 7000, r"is 8000x7000 \(56 megapixels\); expected at most 50 megapixels"),  # ours only
])
def test_pixel_limit_from_the_header(tmp_path, width, height, message):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(width, height))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # any leaked warning fails the test
        with pytest.raises(InputError, match=rf"huge.png {message}"):
            decode_image(path, (84, 84), 3)
        with pytest.raises(InputError, match=rf"image bytes #7 {message}"):
            decode_image(path.read_bytes(), (84, 84), 3, name="image bytes #7")


# -------------------------------------------------------------------------------- undecodable
def test_undecodable_paths_name_the_file(photo, tmp_path):
    jpg = saved(photo, tmp_path / "whole.jpg", "JPEG").read_bytes()
    png = saved(photo, tmp_path / "whole.png", "PNG").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpg[:len(jpg) // 2])
    (tmp_path / "cut.png").write_bytes(png[:len(png) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("shopping list\n")
    (tmp_path / "album.jpg").mkdir()
    os.symlink(tmp_path / "loop_b.png", tmp_path / "loop_a.png")
    os.symlink(tmp_path / "loop_a.png", tmp_path / "loop_b.png")
    (tmp_path / "page.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    os.mkfifo(tmp_path / "pipe.png")
    cases = {
        "cut.jpg": r"cut.jpg cannot be read as an image \(OSError: image file is truncated",
        "cut.png": r"cut.png cannot be read as an image \(OSError: image file is truncated",
        "empty.jpg": r"empty.jpg is empty \(0 bytes\)",
        "notes.png": r"notes.png is not an image Pillow can read",
        "album.jpg": r"album.jpg is a folder",
        "loop_a.png": r"loop_a.png is a symbolic link that leads back to itself \(a loop\)",
        "missing.png": r"missing.png: no such file or folder",
        "page.eps": r"page.eps is not an image Pillow can read",          # EPS (Ghostscript) is never tried
        "pipe.png": r"pipe.png is not a regular file",                    # and never blocks
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, message in cases.items():
            with pytest.raises(InputError, match=rf"{message}.*; expected an image file \(.png, .jpg"):
                decode_image(tmp_path / name, (84, 84), 3)
            with pytest.raises(InputError, match=message):
                decode_image(str(tmp_path / name), None, 1)


def test_undecodable_bytes_are_named_by_their_index(photo):
    buf = io.BytesIO()
    photo.save(buf, "JPEG")
    good = buf.getvalue()
    assert decode_image(good, None, 3).shape == (84, 84, 3)
    assert decode_image(bytearray(good), None, 3).shape == (84, 84, 3)
    cases = {b"": r"image bytes #2 are empty \(0 bytes\)",
             bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)): r"image bytes #2 is not an image",
             good[:len(good) // 2]: r"image bytes #2 cannot be read as an image \(OSError: image file is truncated"}
    for data, message in cases.items():
        with pytest.raises(InputError, match=message):
            decode_image(data, (84, 84), 3, name="image bytes #2")
    with pytest.raises(InputError, match=r"image bytes is not an image"):
        decode_image(b"GIF89a but not really", None, 3)
    with pytest.raises(InputError, match=r"image is a int; expected a path or the bytes of an image file"):
        decode_image(3, None, 3)


@pytest.mark.slow
def test_draft_decoding_keeps_a_phone_photo_small_in_memory(phone_jpeg):
    """Peak RSS in a fresh process (tools/decode_memory.py): the full 12-megapixel decode needs its
    36 MB of pixels at least; the draft decode for an 84x84 bundle stays far below that."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("decode_memory", Path(__file__).parents[1] / "tools" /
                                                  "decode_memory.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    full, draft = tool.measure(phone_jpeg, None), tool.measure(phone_jpeg, (84, 84))
    assert full["shape"] == [3024, 4032, 3] and draft["shape"] == [378, 504, 3]
    assert full["peak_mb"] > 36, (full, draft)
    assert draft["peak_mb"] < 12


# ------------------------------------------------------------------- the runtime takes files
def photo_files(tmp_path: Path, n: int) -> list[Path]:
    """``n`` real sample photos re-saved at mixed sizes and formats (JPEG and PNG)."""
    files = sorted((SAMPLE / "test").glob("*/*.jpg"))[:n]
    out = []
    for k, f in enumerate(files):
        with Image.open(f) as im:
            im = im.convert("RGB").resize((84 + 17 * k, 84 + 9 * (k % 3)))
        out.append(tmp_path / (f"{k}.JPG" if k % 2 else f"{k}.png"))
        im.save(out[-1])
    return out


def test_preprocess_decodes_files_like_their_arrays(photo, tmp_path):
    from edgemeta.contract.preprocess import colour_spec, default_spec, preprocess

    paths = photo_files(tmp_path, 6)
    mixed = [paths[0], str(paths[1]), paths[2].read_bytes(), bytearray(paths[3].read_bytes()),
             decode_image(paths[4], (84, 84), 3), paths[5]]
    for spec, channels in ((colour_spec((84, 84)), 3), (default_spec((28, 28)), 1)):
        arrays = [decode_image(p, tuple(spec["size"]), channels) for p in paths]
        assert np.array_equal(preprocess(mixed, spec, ink="auto"), preprocess(arrays, spec, ink="auto"))


def test_files_are_decoded_chunk_by_chunk(photo, tmp_path):
    from edgemeta.contract.preprocess import colour_spec, iter_preprocess

    paths = photo_files(tmp_path, 6)
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(paths[1].read_bytes()[:300])
    n, chunks = iter_preprocess(paths[:4] + [bad] + paths[4:], colour_spec((84, 84)), chunk=2)
    assert n == 7
    assert next(chunks).shape == (2, 3, 84, 84)          # the broken fifth file is not decoded yet
    assert next(chunks).shape == (2, 3, 84, 84)
    with pytest.raises(InputError, match=r"cut.jpg cannot be read as an image \(OSError: "):
        next(chunks)
    n, chunks = iter_preprocess([paths[0], b"\x89PNG\r\n\x1a\n garbage"], colour_spec((84, 84)), chunk=1)
    next(chunks)
    with pytest.raises(InputError, match=r"image bytes #1 (is not an image|cannot be read)"):
        next(chunks)


def test_classifier_fits_and_predicts_from_files(photo, tmp_path, colour_bundle_dir):
    from edgemeta.runtime import FewShotClassifier

    paths = photo_files(tmp_path, 6)
    arrays = [decode_image(p, (84, 84), 3) for p in paths]
    labels = ["a", "b", "a", "b"]
    by_file = FewShotClassifier(colour_bundle_dir).fit(paths[:4], labels)
    by_array = FewShotClassifier(colour_bundle_dir).fit(arrays[:4], labels)
    queries = [paths[4], paths[5].read_bytes()]
    assert np.array_equal(by_file.decision_function(queries), by_array.decision_function(arrays[4:]))
    with pytest.raises(InputError, match=r"missing.png: no such file or folder"):
        by_file.predict([paths[4], tmp_path / "missing.png"])


# ------------------------------------------------------------------- large images, band by band
def test_large_palette_and_rgba_images_convert_band_by_band_like_the_rule(tmp_path):
    """Images over one band (1 megapixel) are converted a band of rows at a time: the result is still
    the per-pixel rule (RGBA over white; palette through its RGBA colours) for every row."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (1300, 900, 4), dtype=np.uint8)
    p = saved(Image.fromarray(rgba, "RGBA"), tmp_path / "big.png", "PNG")
    want = composite(rgba[..., :3], rgba[..., 3])
    assert np.array_equal(decode_image(p, None, 3), want)
    assert np.array_equal(decode_image(p, None, 1), colour_to_grey(rgba))
    pal = Image.fromarray(rgba[..., :3]).quantize(16)
    q = saved(pal, tmp_path / "big.gif", "GIF")
    with Image.open(q) as im:
        expect = np.asarray(im.convert("RGBA"))
    assert np.array_equal(decode_image(q, None, 3), composite(expect[..., :3], expect[..., 3]))


MEMORY_CHILD = """
import sys
from edgemeta.contract.image_files import decode_image
def kb(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])
open("/proc/self/clear_refs", "w").write("5")        # resets the peak (VmHWM) to the current RSS
before = kb("VmRSS")
a = decode_image(sys.argv[1], (84, 84), 3)
assert a.shape == (7000, 7000, 3), a.shape
print((kb("VmHWM") - before) / 1024)
"""


def test_tiny_gif_declaring_49_megapixels_decodes_within_a_memory_bound(tmp_path):
    """A 2-frame GIF of 84x84 frames whose screen declares 7000x7000 (just under the pixel limit):
    Pillow's palette canvas (49 MB) plus the RGB result (147 MB) must bound the peak, not whole RGBA
    copies (it took about 590 MB). Measured in a fresh process."""
    import subprocess
    import sys

    frames = [Image.fromarray(np.full((84, 84, 3), v, np.uint8)).convert("P") for v in (40, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", 7000, 7000)            # the logical screen size
    p = tmp_path / "screen.gif"
    p.write_bytes(bytes(data))
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(p)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-800:]
    assert float(out.stdout.split()[-1]) < 300
