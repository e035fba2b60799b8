"""ink="auto" (the default): dark-on-white and white-on-dark versions of the same real glyphs give the
same answers, and the README's scenario (support drawn as dark ink on white paper) now works."""

from __future__ import annotations

import numpy as np
import pytest

from edgemeta.runtime import FewShotClassifier


def as_paper_photo(x: np.ndarray) -> np.ndarray:
    """float [N, 28, 28] ink = 1 -> uint8 RGB [N, 28, 28, 3], black ink on white paper."""
    grey = (255 - np.round(x * 255)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def test_both_polarities_give_identical_predictions(shipped_bundle, shipped_task):
    sx, sy, qx, qy = shipped_task
    bright = FewShotClassifier(shipped_bundle).fit(sx, sy)
    dark = FewShotClassifier(shipped_bundle).fit(1.0 - sx, sy)
    np.testing.assert_array_equal(dark.decision_function(1.0 - qx), bright.decision_function(qx))
    np.testing.assert_array_equal(bright.predict(1.0 - qx), bright.predict(qx))   # mixed polarity per image
    assert (bright.predict(qx) == qy).mean() >= 0.9                               # 5-way 5-shot, real glyphs
    photo = FewShotClassifier(shipped_bundle).fit(as_paper_photo(sx), sy)       # colour uint8 photos of paper
    np.testing.assert_array_equal(photo.predict(as_paper_photo(qx)), bright.predict(qx))


def test_forcing_the_wrong_ink_is_what_the_old_default_did(shipped_bundle, shipped_task):
    sx, sy, qx, qy = shipped_task
    forced = FewShotClassifier(shipped_bundle, ink="high").fit(1.0 - sx, sy)
    auto = FewShotClassifier(shipped_bundle).fit(1.0 - sx, sy)
    assert (auto.predict(1.0 - qx) == qy).mean() > (forced.predict(1.0 - qx) == qy).mean()
    low = FewShotClassifier(shipped_bundle, ink="low").fit(1.0 - sx, sy)          # forcing still works
    np.testing.assert_array_equal(low.decision_function(1.0 - qx), auto.decision_function(1.0 - qx))


def test_readme_scenario_dark_ink_on_white(shipped_bundle_dir, shipped_task):
    """README quick start: ``FewShotClassifier(bundle).fit(support_images, labels)`` on ordinary scans."""
    sx, sy, qx, qy = shipped_task
    clf = FewShotClassifier(shipped_bundle_dir)
    assert clf.ink == "auto"
    scans = [(255 - np.round(im * 255)).astype(np.uint8) for im in sx]          # list of uint8 2-D images
    clf.fit(scans, list(sy))
    queries = (255 - np.round(qx * 255)).astype(np.uint8)
    assert (clf.predict(queries) == qy).mean() >= 0.9


def test_resolve_ink_uses_the_same_rule(tmp_path):
    from edgemeta.data.files import resolve_ink

    paper = np.full((10, 10), 230, np.uint8)
    paper[4:6] = 0                                                  # dark stroke on white
    assert resolve_ink([paper, paper], "auto") == "low"
    assert resolve_ink([255 - paper], "auto") == "high"
    assert resolve_ink([paper, 255 - paper], "auto") == "auto"     # mixed: decided image by image
    assert resolve_ink([paper], "high") == "high"
    with pytest.raises(ValueError, match="ink must be 'auto'"):
        resolve_ink([paper], "dark")
