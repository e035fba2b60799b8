"""Several heads over one backbone: export with another rule's head, then a weighted ensemble."""

from __future__ import annotations

import numpy as np
import pytest

from edgemeta.data import EpisodeSampler
from edgemeta.runtime import FewShotClassifier, HeadEnsemble, InputError, NotFittedError


@pytest.fixture(scope="module")
def ridge_bundle_dir(tmp_path_factory, trained_run, lake_val):
    from edgemeta.train.export import export_bundle

    out = tmp_path_factory.mktemp("ridge") / "tiny-ridge.bundle"
    export_bundle(trained_run[0], out, lake_val, parity_episodes=3, metric_episodes=20, method="ridge")
    return out


def test_another_head_on_the_same_backbone_shares_backbone_bytes(bundle_dir, ridge_bundle_dir):
    a = (bundle_dir / "backbone.onnx").read_bytes()
    b = (ridge_bundle_dir / "backbone.onnx").read_bytes()
    assert a == b
    assert FewShotClassifier(ridge_bundle_dir).bundle.method == "ridge"


def test_weighted_ensemble_is_the_weighted_mean_of_member_probabilities(bundle_dir, ridge_bundle_dir, lake_test):
    ep = EpisodeSampler(lake_test, 5, 3, 4, seed=5).episode(0)
    ens = HeadEnsemble([(bundle_dir, 3.0), (ridge_bundle_dir, 1.0)]).fit(ep.support_x, ep.support_y)
    members = [FewShotClassifier(b).fit(ep.support_x, ep.support_y) for b in (bundle_dir, ridge_bundle_dir)]
    expect = 0.75 * members[0].predict_proba(ep.query_x) + 0.25 * members[1].predict_proba(ep.query_x)
    got = ens.predict_proba(ep.query_x)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert (ens.predict(ep.query_x) == ens.classes_[expect.argmax(1)]).all()
    assert (ens.predict(ep.query_x) == ep.query_y).mean() > 0.6


def test_ensemble_refuses_different_backbones_and_bad_weights(bundle_dir, tmp_path):
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "models" / "omniglot-conv4-proto"
    with pytest.raises(InputError, match="another backbone"):
        HeadEnsemble([(bundle_dir, 1.0), (shipped, 1.0)])
    with pytest.raises(InputError, match="weights must be >= 0"):
        HeadEnsemble([(bundle_dir, -1.0)])
    with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
        HeadEnsemble([(bundle_dir, 1.0)]).predict_proba(np.zeros((1, 28, 28), np.float32))
