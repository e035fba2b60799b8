"""scikit-learn's own tools on FewShotClassifier (the runtime never imports scikit-learn itself)."""

from __future__ import annotations

import numpy as np
import pytest

from edgemeta.errors import InputError, NotFittedError
from edgemeta.runtime import FewShotClassifier

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone, is_classifier  # noqa: E402
from sklearn.exceptions import NotFittedError as SkNotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402


@pytest.fixture(scope="module")
def data(vinyals_test, task_drawer):
    """4 never-seen Vinyals characters, 6 drawings each, as dark ink on white paper (uint8)."""
    sx, sy, qx, qy = task_drawer(vinyals_test, 4, 3, 3, seed=77)
    x = np.concatenate([sx, qx])
    return (255 - np.round(x * 255)).astype(np.uint8), np.concatenate([sy, qy])


def test_params_and_clone_share_the_bundle(shipped_bundle):
    clf = FewShotClassifier(shipped_bundle, unknown_threshold=-3.0)
    assert is_classifier(clf)
    params = clf.get_params()
    assert params == {"bundle": shipped_bundle, "ink": "auto", "threads": 1, "unknown_label": "unknown",
                      "unknown_threshold": -3.0, "precision": "auto"}
    twin = clone(clf)
    assert twin is not clf and twin.bundle is shipped_bundle and twin.get_params() == params
    assert clf.set_params(unknown_threshold=-1.0, ink="low") is clf and clf.unknown_threshold == -1.0
    with pytest.raises(InputError, match=r"unknown parameter\(s\) \['colour'\]; expected some of"):
        clf.set_params(colour=True)
    with pytest.raises(InputError, match="ink must be 'auto'"):
        clf.set_params(ink="dark")


def test_fitted_state_and_score(shipped_bundle, data):
    x, y = data
    clf = FewShotClassifier(shipped_bundle)
    with pytest.raises(SkNotFittedError):
        check_is_fitted(clf)
    with pytest.raises(NotFittedError, match="not fitted yet"):         # edgemeta's own, from its methods
        clf.predict(x)
    clf.fit(x[::2], y[::2])
    check_is_fitted(clf)
    assert clf.score(x[1::2], y[1::2]) == np.mean(clf.predict(x[1::2]) == y[1::2])
    assert clone(clf).classes_ is None                              # a clone is unfitted


def test_cross_val_score_pipeline_and_grid_search(shipped_bundle, data):
    x, y = data
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(FewShotClassifier(shipped_bundle), x, y, cv=cv)
    assert scores.shape == (3,) and scores.mean() >= 0.75              # 4-way 4-shot (chance 0.25)
    invert = FunctionTransformer(lambda im: 255 - im)                 # a preprocessing step before it
    pipe = Pipeline([("invert", invert), ("clf", FewShotClassifier(shipped_bundle))])
    np.testing.assert_array_equal(cross_val_score(pipe, x, y, cv=cv), scores)    # ink="auto" either way
    grid = GridSearchCV(FewShotClassifier(shipped_bundle), {"ink": ["auto", "high"]}, cv=cv).fit(x, y)
    assert grid.best_params_ == {"ink": "auto"}                      # forcing bright ink on dark-ink scans loses
    assert grid.best_estimator_.bundle is shipped_bundle
