"""Shift-averaged embedding: the views are exact pixel shifts, and the exported graph embeds each
image as the mean of the plain backbone over those shifted images (checked through the runtime)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemeta.runtime import Bundle
from edgemeta.train.shift_views import SHIFT_VIEWS, ShiftAveraged, shifted_views


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """numpy oracle: content moved down dy and right dx, zero fill."""
    out = np.zeros_like(img)
    h, w = img.shape[-2:]
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[..., y, x] = img[..., y - dy, x - dx]
    return out


def test_views_are_zero_filled_pixel_shifts():
    x = torch.rand(3, 1, 6, 7)
    v = shifted_views(x, SHIFT_VIEWS[9]).numpy()
    assert v.shape == (27, 1, 6, 7)
    for i, (dy, dx) in enumerate(SHIFT_VIEWS[9]):
        np.testing.assert_array_equal(v[3 * i:3 * i + 3], _shift(x.numpy(), dy, dx))


def test_one_view_is_the_backbone_and_bad_counts_are_refused():
    bb = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    bb.out_dim = 4
    x = torch.rand(5, 1, 4, 4)
    torch.testing.assert_close(ShiftAveraged(bb, 1)(x), bb(x))
    with pytest.raises(ValueError, match=r"one of \[1, 5, 9\]"):
        ShiftAveraged(bb, 4)


def test_exported_shift_views_equal_the_mean_over_shifted_images(trained_run, lake_val, bundle, tmp_path, task):
    from edgemeta.train.export import export_bundle

    manifest = export_bundle(trained_run[0], tmp_path / "views5", lake_val, parity_episodes=3, metric_episodes=20,
                             shift_views=5)
    assert manifest["embedding"]["shift_views"] == [list(s) for s in SHIFT_VIEWS[5]]
    assert bundle.manifest["embedding"]["shift_views"] == [[0, 0]]
    views = Bundle.load(tmp_path / "views5")
    assert views.embed_chunk == 6 < 8       # 32 views per backbone run: the 8 images below take two runs
    x = bundle.preprocess(task[0][:8])
    want = np.mean([bundle.embed(_shift(x, dy, dx)) for dy, dx in SHIFT_VIEWS[5]], axis=0)
    np.testing.assert_allclose(views.embed(x), want, atol=1e-5)
    assert np.abs(views.embed(x) - bundle.embed(x)).max() > 1e-3     # it is not the plain embedding


def test_shipped_accurate_bundle_is_a_verified_9_view_576d_model(vinyals_test):
    from pathlib import Path

    from edgemeta.evaluation import evaluate_episodes

    path = Path(__file__).resolve().parents[1] / "models" / "omniglot-conv4"
    b = Bundle.load(path)
    assert (b.embedding_dim, b.precision, len(b.manifest["embedding"]["shift_views"])) == (576, "int8", 9)
    assert b.manifest["precision"]["int8"]["passed"] and b.manifest["parity"]["prediction_mismatches"] == 0
    res = evaluate_episodes(b, vinyals_test, ways=5, shots=1, queries=5, episodes=20, seed=3)
    assert res["accuracy"] > 90.0        # 98.8 over 1,000 episodes; chance is 20
