"""The colour path of ``contract.preprocess`` against an independent oracle.

The oracle is written from the rule in docs/bundle-format.md with plain Python loops over output
pixels (integers and float64, Pillow itself for the nearest index of an upscaled axis) and shares no
code with the fast path. Every comparison is exact.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgemeta.contract import preprocess as pp
from edgemeta.contract import resample
from edgemeta.contract.preprocess import colour_spec, preprocess
from edgemeta.errors import InputError

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-imagenet" / "sample"


# ------------------------------------------------------------------------------------------ the oracle
def oracle_rgb(img: np.ndarray, y: int, x: int) -> tuple[int, int, int]:
    """Pixel (y, x) of a raw image as uint8 R, G, B."""
    v = img[y, x]
    if img.ndim == 2:
        if img.dtype == np.bool_:
            g = 255 if v else 0
        elif img.dtype == np.uint8:
            g = int(v)
        else:
            g = math.floor(float(v) * 255 + 0.5)
        return g, g, g
    if img.dtype == np.uint8:
        c = [int(t) for t in v]
        if len(c) == 4:
            a = c[3]
            return tuple((ci * a + 255 * (255 - a) + 127) // 255 for ci in c[:3])
        return tuple(c)
    c = [float(t) for t in v]
    if len(c) == 4:
        a = c[3]
        c = [ci * a + (1.0 - a) for ci in c[:3]]
    return tuple(math.floor(ci * 255 + 0.5) for ci in c)


def pillow_nearest(n_in: int, n_out: int) -> list[int]:
    """The source index Pillow's NEAREST resize picks for each output pixel (asked of Pillow itself)."""
    ramp = Image.fromarray(np.arange(n_in, dtype=np.int32)[None, :], mode="I")
    return [int(v) for v in np.asarray(ramp.resize((n_out, 1), Image.Resampling.NEAREST))[0]]


def oracle_bins(n_in: int, n_out: int) -> list[range]:
    if n_in >= n_out:
        return [range(i * n_in // n_out, (i + 1) * n_in // n_out) for i in range(n_out)]
    return [range(k, k + 1) for k in pillow_nearest(n_in, n_out)]


def oracle_resize(img: np.ndarray, y0: int, x0: int, ch: int, cw: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3]: the crop (y0, x0, ch, cw) of ``img`` box_int-resized, one output pixel at a time."""
    H, W = size
    rows, cols = oracle_bins(ch, H), oracle_bins(cw, W)
    out = np.zeros((H, W, 3), np.uint8)
    for i in range(H):
        for j in range(W):
            s, c = [0, 0, 0], 0
            for y in rows[i]:
                for x in cols[j]:
                    p = oracle_rgb(img, y0 + y, x0 + x)
                    s = [a + b for a, b in zip(s, p)]
                    c += 1
            out[i, j] = [(sk + c // 2) // c for sk in s]
    return out


def oracle_preprocess(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 [3, H, W] by the documented rule: centre crop, box_int, v / 255."""
    h, w = img.shape[:2]
    H, W = size
    if w * H > h * W:
        cw, ch = (h * W) // H, h
        x0, y0 = (w - cw) // 2, 0
    else:
        ch, cw = (w * H) // W, w
        y0, x0 = (h - ch) // 2, 0
    u8 = oracle_resize(img, y0, x0, ch, cw, size)
    return (u8.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)


# ------------------------------------------------------------------------------------------ inputs
def random_image(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    if kind == "rgb":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "rgba":
        img = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        img[..., 3] = rng.choice([0, 1, 128, 254, 255], (h, w))     # edge alphas included
        return img
    if kind == "grey":
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    if kind == "bool":
        return rng.random((h, w)) > 0.5
    if kind == "float-rgb":
        return rng.random((h, w, 3)).astype(np.float32)
    if kind == "float-rgba":
        img = rng.random((h, w, 4))
        img[..., 3] = np.where(rng.random((h, w)) < 0.3, rng.choice([0.0, 1.0], (h, w)), img[..., 3])
        return img
    if kind == "float-grey":
        return rng.random((h, w)).astype(np.float16)
    raise ValueError(kind)


KINDS = ("rgb", "rgba", "grey", "bool", "float-rgb", "float-rgba", "float-grey")
# (source h, w) for target 7 x 5: wide, tall, both axes upscaled, exact size, same aspect downscaled, odd crops
SIZES = [(9, 31), (40, 6), (4, 4), (6, 4), (7, 5), (21, 15), (13, 8), (5, 17), (33, 33)]


@pytest.mark.parametrize("kind", KINDS)
def test_fast_path_equals_the_oracle_on_every_shape(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    size = (7, 5)
    sizes = SIZES + [tuple(int(v) for v in rng.integers(4, 40, 2)) for _ in range(6)]
    images = [random_image(rng, h, w, kind) for h, w in sizes]
    got = preprocess(images, colour_spec(size))
    assert got.shape == (len(images), 3, *size) and got.dtype == np.float32
    for k, img in enumerate(images):
        np.testing.assert_array_equal(got[k], oracle_preprocess(img, size), err_msg=f"{kind} {img.shape}")


def test_batches_of_same_shaped_images_equal_the_oracle_and_the_list_path():
    rng = np.random.default_rng(5)
    batch = rng.integers(0, 256, (5, 23, 50, 4), dtype=np.uint8)
    got = preprocess(batch, colour_spec((6, 9)))
    want = np.stack([oracle_preprocess(im, (6, 9)) for im in batch])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(preprocess(list(batch), colour_spec((6, 9))), want)


def test_row_slabs_and_image_groups_change_nothing(monkeypatch):
    """With tiny slabs one large image is converted a few rows at a time and batches a few images at a
    time; the result is the oracle's either way."""
    rng = np.random.default_rng(6)
    images = [random_image(rng, 61, 47, "float-rgba"), random_image(rng, 8, 70, "rgb")]
    batch = rng.integers(0, 256, (4, 30, 30, 3), dtype=np.uint8)
    want = [oracle_preprocess(im, (9, 7)) for im in images]
    want_batch = [oracle_preprocess(im, (9, 7)) for im in batch]
    monkeypatch.setattr(resample, "SLAB_PIXELS", 150)
    monkeypatch.setattr(pp, "SLAB_PIXELS", 150)
    np.testing.assert_array_equal(preprocess(images, colour_spec((9, 7))), np.stack(want))
    np.testing.assert_array_equal(preprocess(batch, colour_spec((9, 7))), np.stack(want_batch))


@pytest.mark.parametrize("shape,size", [((12, 3), (5, 7)), ((3, 12), (7, 5)), ((6, 6), (11, 6)), ((20, 20), (20, 6))],
                         ids=["rows-down-cols-up", "rows-up-cols-down", "rows-up-cols-same", "rows-same-cols-down"])
def test_box_int_on_one_upscaled_axis_equals_the_oracle(shape, size):
    """The centre crop keeps the target aspect, so a whole photo is upscaled on both axes or neither;
    the resize itself takes each axis on its own, checked here on crops of any shape."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = resample.box_int_resize(img[None], size, lambda px: px)
    np.testing.assert_array_equal(got[0], oracle_resize(img, 0, 0, *shape, size))


def test_ink_has_no_effect_and_aspect_is_free_for_colour():
    rng = np.random.default_rng(8)
    thin = rng.integers(0, 256, (4, 100, 3), dtype=np.uint8)            # 25:1, refused by grey bundles
    spec = colour_spec((6, 6))
    outs = [preprocess([thin], spec, ink=ink) for ink in ("auto", "high", "low")]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[0][0], oracle_preprocess(thin, (6, 6)))
    with pytest.raises(InputError, match="aspect ratio within 4:1"):
        preprocess([thin], pp.default_spec((6, 6)))
    with pytest.raises(InputError, match="ink must be"):
        preprocess([thin], spec, ink="dark")


@pytest.mark.parametrize("bad,match", [
    (np.full((6, 6, 3), np.nan, np.float32), "NaN or inf"),
    (np.full((6, 6, 3), 1.5), r"values in \[1.5, 1.5\]"),
    (np.zeros((6, 6, 3), bool), "dtype bool"),
    (np.zeros((3, 6, 3), np.uint8), "at least 4x4"),
    (np.zeros((6, 6, 3), np.int16), "dtype int16"),
])
def test_bad_colour_inputs_are_input_errors(bad, match):
    with pytest.raises(InputError, match=match):
        preprocess([bad], colour_spec((6, 6)))


def test_the_pixel_limit_is_checked_before_any_work():
    huge = np.broadcast_to(np.uint8(0), (1, 7072, 7072, 3))              # 50.01 megapixels, no memory behind it
    with pytest.raises(InputError, match="at most 50 megapixels"):
        preprocess(huge, colour_spec((84, 84)))


@pytest.mark.parametrize("spec_edit", [{"resize": "nearest"}, {"channel_order": "BGR"}, {"fit": "stretch"},
                                       {"normalization": "none"}, {"channels": 2}])
def test_colour_specs_this_runtime_cannot_follow_are_refused(spec_edit):
    with pytest.raises(InputError):
        preprocess(np.zeros((1, 8, 8, 3), np.uint8), {**colour_spec((6, 6)), **spec_edit})


# ------------------------------------------------------------------------------------------ real photos
def sample_photos(n: int) -> list[np.ndarray]:
    if not SAMPLE.is_dir():
        pytest.skip(f"mini-ImageNet sample photos not found at {SAMPLE}")
    files = sorted(SAMPLE.glob("test/*/*.jpg"))[:n]
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def test_an_84x84_photo_passes_through_unchanged():
    photos = sample_photos(4)
    assert all(p.shape == (84, 84, 3) for p in photos)
    got = preprocess(photos, colour_spec((84, 84)))
    np.testing.assert_array_equal(got, np.stack(photos).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))


def test_a_2x_upscaled_photo_comes_back_equal():
    photos = sample_photos(3)
    big = [p.repeat(2, axis=0).repeat(2, axis=1) for p in photos]          # 168 x 168, each pixel a 2x2 block
    np.testing.assert_array_equal(preprocess(big, colour_spec((84, 84))), preprocess(photos, colour_spec((84, 84))))


def test_a_wide_photo_is_centre_cropped():
    (photo,) = sample_photos(1)
    wide = np.zeros((84, 121, 3), np.uint8)
    wide[:, 18:102] = photo                                                # crop x0 = (121 - 84) // 2 = 18
    np.testing.assert_array_equal(preprocess([wide], colour_spec((84, 84))), preprocess([photo], colour_spec((84, 84))))


def test_a_photo_with_a_transparent_border_composites_over_white():
    (photo,) = sample_photos(1)
    rng = np.random.default_rng(9)
    framed = rng.integers(0, 256, (104, 104, 4), dtype=np.uint8)           # random colours under alpha 0
    framed[..., 3] = 0
    framed[10:94, 10:94, :3], framed[10:94, 10:94, 3] = photo, 255
    framed[10, 10:94, 3] = 128                                            # one half-transparent row
    got = preprocess([framed], colour_spec((104, 104)))[0]
    border = np.ones((104, 104), bool)
    border[10:94, 10:94] = False
    assert (got[:, border] == 1.0).all()                                  # white where alpha is 0
    np.testing.assert_array_equal(got[:, 11:94, 10:94], photo[1:].transpose(2, 0, 1) / np.float32(255))
    half = (photo[0].astype(int) * 128 + 255 * 127 + 127) // 255
    np.testing.assert_array_equal(got[:, 10, 10:94], half.T.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(got, oracle_preprocess(framed, (104, 104)))


# ------------------------------------------------------------------------------------------ memory
def test_a_large_float_photo_is_converted_in_slabs_not_copied_whole():
    """A 4000x4000 float32 RGBA photo (256 MB): one float64 copy of it would be 512 MB; the peak
    growth during preprocessing stays far below that (measured by tools/colour_input_memory.py)."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "tools" / "colour_input_memory.py"), "--side", "4000"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    cases = {r["case"]: r for r in map(json.loads, out.stdout.strip().splitlines())}
    assert cases["float-rgba"]["input_mb"] == 244.1
    assert all(r["peak_growth_mb"] < 300 for r in cases.values()), cases


def test_the_uint8_form_is_the_float_form_times_255():
    """``preprocess_colour_uint8`` (what a training set stores) is the same rule before ``v / 255``."""
    rng = np.random.default_rng(10)
    images = [random_image(rng, h, w, kind) for (h, w), kind in zip(SIZES, KINDS * 2)]
    u8 = pp.preprocess_colour_uint8(images, (7, 5))
    assert u8.dtype == np.uint8 and u8.shape == (len(images), 3, 7, 5)
    np.testing.assert_array_equal(u8.astype(np.float32) / np.float32(255), preprocess(images, colour_spec((7, 5))))
    for k, img in enumerate(images):
        np.testing.assert_array_equal(u8[k], oracle_resize_full(img, (7, 5)))
    with pytest.raises(InputError, match=r"images\[1\] contain NaN"):
        pp.preprocess_colour_uint8([images[0], np.full((5, 5, 3), np.nan)], (7, 5))


def oracle_resize_full(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [3, H, W] of the oracle (crop + box_int), before v / 255."""
    return np.round(oracle_preprocess(img, size).astype(np.float64) * 255).astype(np.uint8)
