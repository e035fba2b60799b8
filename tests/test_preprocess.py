"""``preprocess``: the one raw-image -> backbone-input function, pinned to Pillow's resize and to its errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgemeta.contract.input_checks import MAX_PIXELS
from edgemeta.contract.preprocess import (colour_to_grey, dark_on_bright, default_spec, iter_preprocess,
                                          nearest_indices, preprocess)
from edgemeta.errors import InputError

SPEC = default_spec((28, 28), "nearest")


def pillow_nearest(img_u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """What an app that uses Pillow gets: ``Image.resize(..., NEAREST)`` of an 8-bit grey image, in [0, 1]."""
    h, w = size
    out = Image.fromarray(img_u8, mode="L").resize((w, h), Image.NEAREST)
    return np.asarray(out, dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def binary_105():
    rng = np.random.default_rng(0)
    return rng.random((8, 105, 105)) < rng.uniform(0.05, 0.6, (8, 1, 1))


def test_nearest_equals_pillow_on_105x105(binary_105):
    u8 = binary_105.astype(np.uint8) * 255
    expect = np.stack([pillow_nearest(im, (28, 28)) for im in u8])
    for raw in (u8, binary_105, binary_105.astype(np.float32), binary_105.astype(np.float64),
                u8[:, None]):                                       # [N, 1, H, W] too
        out = preprocess(raw, SPEC)
        assert out.shape == (8, 1, 28, 28) and out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_array_equal(out[:, 0], expect)


@pytest.mark.parametrize("in_size,out_size", [((64, 64), (28, 28)), ((104, 104), (28, 28)),
                                              ((8, 8), (28, 28)), ((56, 98), (28, 28)),
                                              ((14, 14), (5, 5)), ((105, 105), (84, 84))],
                         ids=["64->28", "104->28", "8->28", "56x98->28", "14->5", "105->84"])
def test_nearest_equals_pillow_on_other_sizes(in_size, out_size):
    """The manifest names Pillow's ``nearest``; an app that calls Pillow must get the same pixels.

    Pillow computes the source coordinate by accumulating ``in/out`` in floating point, so where
    ``(i + 0.5) * in / out`` is exactly an integer it can land one pixel lower than the exact value.
    """
    rng = np.random.default_rng(sum(in_size) * 1000 + sum(out_size))
    x = (rng.random((3, *in_size)) < 0.4).astype(np.uint8) * 255
    expect = np.stack([pillow_nearest(im, out_size) for im in x])
    out = preprocess(x, default_spec(out_size, "nearest"))
    np.testing.assert_array_equal(out[:, 0], expect)


def test_nearest_indices_rule():
    np.testing.assert_array_equal(nearest_indices(105, 28), ((np.arange(28) + 0.5) * 105 / 28).astype(int))
    np.testing.assert_array_equal(nearest_indices(28, 28), np.arange(28))
    np.testing.assert_array_equal(nearest_indices(28, 56), np.repeat(np.arange(28), 2))
    assert nearest_indices(3, 1).tolist() == [1]


def test_value_mapping_by_dtype():
    def tile(row, dtype):                                   # a 4x4 image whose rows are all `row`
        return np.tile(np.array(row, dtype), (1, 4, 1))

    spec = default_spec((4, 4))
    np.testing.assert_allclose(preprocess(tile([0, 51, 255, 0], np.uint8), spec)[0, 0, 0], [0.0, 0.2, 1.0, 0.0], rtol=1e-7)
    np.testing.assert_array_equal(preprocess(tile([True, False, True, False], bool), spec)[0, 0, 0], [1.0, 0.0, 1.0, 0.0])
    f = tile([0.0, 0.25, 1.0, 0.5], np.float64)
    np.testing.assert_array_equal(preprocess(f, spec)[0, 0, 0], [0.0, 0.25, 1.0, 0.5])
    np.testing.assert_array_equal(preprocess(f.astype(np.float16), spec)[0, 0, 0], [0.0, 0.25, 1.0, 0.5])


def test_tiny_or_flattened_images_are_refused():
    with pytest.raises(InputError, match=r"size 2x2; expected 2-D images at least 4x4"):
        preprocess(np.zeros((1, 2, 2), np.float32), SPEC)
    with pytest.raises(InputError, match=r"aspect ratio within 4:1 .*flattened"):
        preprocess([np.zeros((1, 784), np.float32)], SPEC)


def test_ink_low_inverts(binary_105):
    high = preprocess(binary_105, SPEC)
    paper_bright = ~binary_105                                     # dark ink on white paper
    np.testing.assert_array_equal(preprocess(paper_bright, SPEC, ink="low"), high)
    np.testing.assert_array_equal(preprocess(binary_105, SPEC, ink="low"), 1.0 - high)
    g = np.random.default_rng(1).random((2, 30, 30)).astype(np.float32)
    np.testing.assert_allclose(preprocess(g, SPEC, ink="low"), 1.0 - preprocess(g, SPEC), atol=0)
    # a bundle whose spec says ink is low inverts high-ink input instead
    low_spec = dict(SPEC, ink="low")
    np.testing.assert_array_equal(preprocess(binary_105, low_spec, ink="high"), 1.0 - high)
    with pytest.raises(InputError, match=r"ink must be 'auto' \(decided per image\), 'high'.*'low'.*got 'dark'"):
        preprocess(binary_105, SPEC, ink="dark")


def test_list_of_differently_sized_images(binary_105):
    x28 = preprocess(binary_105[:3], SPEC)[:, 0]
    items = [np.kron(x28[0], np.ones((2, 2), np.float32)),       # 56x56, nearest -> exactly x28[0]
             np.kron(x28[1], np.ones((3, 3), np.float32)),       # 84x84
             x28[2][None]]                                      # [1, 28, 28] is a 2-D image too
    out = preprocess(items, SPEC)
    assert out.shape == (3, 1, 28, 28) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], x28)
    # a list of mixed dtypes, each mapped on its own
    mixed = [binary_105[0], binary_105[1].astype(np.uint8) * 255, binary_105[2].astype(np.float32)]
    np.testing.assert_array_equal(preprocess(mixed, SPEC), preprocess(binary_105[:3], SPEC))


def test_other_pillow_filters_go_through_pillow():
    x = np.random.default_rng(2).random((2, 50, 40)).astype(np.float32)
    out = preprocess(x, default_spec((28, 28), "bilinear"))
    expect = np.stack([np.asarray(Image.fromarray(im, mode="F").resize((28, 28), Image.BILINEAR))
                       for im in x]).clip(0, 1)
    np.testing.assert_allclose(out[:, 0], expect, rtol=0, atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0
    with pytest.raises(InputError, match=r"unknown resize filter 'cubic'; expected one of"):
        preprocess(x, default_spec((28, 28), "cubic"))


@pytest.mark.parametrize("bad,expected", [
    (np.full((2, 28, 28), np.nan, np.float32), r"NaN or inf; expected finite values in \[0, 1\]"),
    (np.where(np.eye(28, dtype=bool)[None], np.inf, 0.0), r"NaN or inf; expected finite"),
    (np.full((1, 28, 28), 1.5), r"values in \[1.5, 1.5\]; expected float images scaled to \[0, 1\]"),
    (np.full((1, 28, 28), -0.1, np.float32), r"values in \[-0.1, -0.1\]; expected float images scaled"),
    (np.full((1, 28, 28), 200.0), r"expected float images scaled to \[0, 1\] \(or uint8 0..255, or bool\)"),
])
def test_bad_values(bad, expected):
    with pytest.raises(InputError, match=expected):
        preprocess(bad, SPEC)


@pytest.mark.parametrize("dtype", [np.complex64, np.int64, np.int32, np.uint16, object, np.str_])
def test_bad_dtype_names_what_is_expected(dtype):
    x = np.zeros((2, 28, 28), dtype=dtype)
    with pytest.raises(InputError, match=r"dtype .*; expected bool, uint8 \(0..255\) or float in \[0, 1\]"):
        preprocess(x, SPEC)


@pytest.mark.parametrize("shape", [(28, 28), (784,), (2, 3, 28, 28), (1, 2, 1, 28, 28), ()])
def test_wrong_ndim_array(shape):
    with pytest.raises(InputError, match=r"have shape .*; expected \[N, H, W\] or \[N, 1, H, W\] grey, "
                                         r"\[N, H, W, 3\] RGB or \[N, H, W, 4\] RGBA images, or a list of"):
        preprocess(np.zeros(shape, np.float32), SPEC, what="support images")


def test_wrong_ndim_in_a_list():
    with pytest.raises(InputError, match=r"images\[1\] has shape \(2, 28, 28\); expected a 2-D single-channel"):
        preprocess([np.zeros((28, 28)), np.zeros((2, 28, 28))], SPEC)
    with pytest.raises(InputError, match=r"images\[0\] has shape \(784,\); expected a 2-D"):
        preprocess([np.zeros(784)], SPEC)


@pytest.mark.parametrize("empty", [np.zeros((0, 28, 28), np.float32), np.zeros((0, 1, 28, 28), np.uint8), []])
def test_empty_input(empty):
    with pytest.raises(InputError, match="are empty; expected at least one image"):
        preprocess(empty, SPEC)


def test_empty_spatial_size():
    with pytest.raises(InputError, match="have size"):
        preprocess(np.zeros((2, 0, 5), np.float32), SPEC)


def test_message_names_the_argument():
    with pytest.raises(InputError, match=r"^query images contain NaN"):
        preprocess(np.full((1, 4, 4), np.nan), SPEC, what="query images")


# ---- colour, ink polarity, chunks and the pixel limit ------------------------------------------------

def test_uint8_colour_is_pillows_convert_L():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (3, 30, 30, 3), dtype=np.uint8)
    grey = np.stack([np.asarray(Image.fromarray(im, "RGB").convert("L")) for im in rgb])
    np.testing.assert_array_equal(colour_to_grey(rgb), grey)
    np.testing.assert_array_equal(preprocess(rgb, SPEC, ink="high"), preprocess(grey, SPEC, ink="high"))
    items = [rgb[0], grey[1], rgb[2][:, :28]]                        # colour and grey items of any size
    np.testing.assert_array_equal(preprocess(items, SPEC, ink="high")[:2], preprocess(grey[:2], SPEC, ink="high"))


def test_uint8_rgba_is_composited_over_white_in_integers():
    px = np.array([[[10, 200, 30, 0], [10, 200, 30, 255], [100, 50, 250, 128], [0, 0, 0, 1]]], np.uint8)
    c, a = px[..., :3].astype(np.int64), px[..., 3:].astype(np.int64)
    over = (c * a + 255 * (255 - a) + 127) // 255
    expect = (19595 * over[..., 0] + 38470 * over[..., 1] + 7471 * over[..., 2] + 32768) >> 16
    assert colour_to_grey(px).tolist() == expect.tolist()
    assert colour_to_grey(px)[0, 0] == 255                          # fully transparent = white paper


def test_float_colour_rule():
    rng = np.random.default_rng(6)
    rgba = rng.random((2, 8, 8, 4)).astype(np.float32)
    r, g, b, a = (rgba[..., i] for i in range(4))
    over = [ch * a + (np.float32(1) - a) for ch in (r, g, b)]
    expect = np.float32(0.299) * over[0] + np.float32(0.587) * over[1] + np.float32(0.114) * over[2]
    np.testing.assert_array_equal(colour_to_grey(rgba), np.minimum(expect, 1))
    assert colour_to_grey(rgba).dtype == np.float32
    with pytest.raises(InputError, match=r"have values in \[0.0\d*, 1.99\d*\]; expected float images scaled"):
        preprocess(np.concatenate([rgba, rgba + 1]), SPEC)


def test_colour_refusals():
    with pytest.raises(InputError, match=r"dtype bool; expected uint8 \(0..255\) or float in \[0, 1\] for colour"):
        preprocess(np.zeros((1, 28, 28, 3), bool), SPEC)
    with pytest.raises(InputError, match=r"images\[0\] has shape \(28, 28, 2\); expected a 2-D single-channel image"):
        preprocess([np.zeros((28, 28, 2), np.uint8)], SPEC)


def test_ink_auto_rule_is_the_mean_before_resizing():
    """Per image: mean in [0, 1] above 0.5 -> dark ink on bright paper -> inverted; exactly 0.5 is kept."""
    spec = default_spec((4, 4))
    half = np.zeros((1, 8, 8), np.uint8)
    half[0, :4] = 255                                                # mean exactly 0.5: used as is
    np.testing.assert_array_equal(preprocess(half, spec, ink="auto"), preprocess(half, spec, ink="high"))
    over = half.copy()
    over[0, 4, 0] = 1                                                # one grey level above half: inverted
    np.testing.assert_array_equal(preprocess(over, spec, ink="auto"), preprocess(over, spec, ink="low"))
    # decided before resizing: the sampled 4x4 pixels would all be ink, the 8x8 image is mostly paper
    sparse = np.zeros((1, 8, 8), bool)
    sparse[0, 1::2, 1::2] = True
    assert preprocess(sparse, spec, ink="high").min() == 1.0
    np.testing.assert_array_equal(preprocess(sparse, spec, ink="auto"), preprocess(sparse, spec, ink="high"))
    f = np.full((1, 4, 4), 0.5000001)
    np.testing.assert_array_equal(preprocess(f, spec, ink="auto"), preprocess(f, spec, ink="low"))
    # per image: a batch mixing both polarities
    mixed = np.stack([half[0], over[0]])
    np.testing.assert_array_equal(preprocess(mixed, spec, ink="auto")[:, 0],
                                  [preprocess(half, spec)[0, 0], preprocess(over, spec, ink="low")[0, 0]])
    assert dark_on_bright(mixed).tolist() == [False, True]


def test_chunks_equal_one_pass(binary_105):
    x = np.concatenate([binary_105] * 40)                           # 320 images: two chunks
    n, chunks = iter_preprocess(x, SPEC, chunk=256)
    parts = list(chunks)
    assert n == 320 and [len(p) for p in parts] == [256, 64]
    np.testing.assert_array_equal(np.concatenate(parts), np.concatenate([preprocess(binary_105, SPEC)] * 40))
    items = [im for im in x[:300]] + [binary_105[0][:, :90]]           # equal-shaped runs, then an odd one
    np.testing.assert_array_equal(preprocess(items, SPEC)[:300], preprocess(x[:300], SPEC))


def test_large_images_are_limited_and_not_copied_as_floats():
    side = int(MAX_PIXELS ** 0.5) + 1
    big = np.broadcast_to(np.uint8(0), (1, side, side))              # no memory behind it
    with pytest.raises(InputError, match=rf"size {side}x{side} \(50 megapixels\); expected at most 50 megapixels"):
        preprocess(big, SPEC)
    ok = np.broadcast_to(np.float64(1.0), (1, side - 2, side - 2))     # just under: float64, read-only view
    out = preprocess(ok, SPEC, ink="auto")                          # all paper -> inverted -> zeros
    assert out.shape == (1, 1, 28, 28) and out.max() == 0.0
