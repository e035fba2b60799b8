"""State files are shared between the JavaScript runtime (``js/src/state.js``) and the Python runtime.

``js/tools/state_interop.js`` fits and saves, or loads and answers, in Node over onnxruntime-node; here
the Python runtime does the other half: a state the JS runtime saved loads in
``FewShotClassifier.load(bundle, path, key=...)`` with the same classes and predictions (and, re-saved
by Python, is the same bytes), a state Python saved (plain and AES-256-GCM) loads in JS likewise, for
a plain, a refine (unlabelled pool) and a recurrent bundle, and regression states both ways; JS refuses
another bundle's state and a wrong key with a StateError; ``deriveStateKey`` equals ``hashlib.pbkdf2_hmac``. Skipped without Node.js
or ``js/node_modules``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemeta.runtime import FewShotClassifier
from edgemeta.runtime.regressor import FewShotRegressor

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "js" / "tools" / "state_interop.js"
PROTO = REPO / "models" / "omniglot-conv4-proto"
REFINE = REPO / "models" / "omniglot-conv4-proto-refine"
RECURRENT = REPO / "js" / "test" / "recurrent-bundle"
KEY = bytes(range(1, 33))
LOGIT_TOL = 1e-5


def _images(seed: int, n: int) -> np.ndarray:
    """``n`` float32 28x28 drawings in [0, 1]: random strokes (what is drawn does not matter here)."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, 28, 28)) < 0.15).astype(np.float32)


def _wire(images: np.ndarray) -> list[dict[str, Any]]:
    return [{"data": base64.b64encode(np.ascontiguousarray(x, "<f4").tobytes()).decode(), "height": 28, "width": 28}
            for x in images]


def _js(node: str, request: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([node, str(TOOL)], input=json.dumps(request), capture_output=True, text=True,
                          cwd=REPO / "js", timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


SUPPORT = _images(1, 9)
LABELS = ["b", "b", "b", "a", "a", "a", "ü", "ü", "ü"]
QUERY = _images(2, 16)


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "aes-256-gcm"])
def test_a_state_saved_by_js_loads_in_python_with_the_same_predictions(node, tmp_path, key):
    path = tmp_path / "js.state"
    js = _js(node, {"op": "fit-save", "bundle": str(PROTO), "support": _wire(SUPPORT), "labels": LABELS,
                    "query": _wire(QUERY), "out": str(path), "key": key.hex() if key else None})
    clf = FewShotClassifier.load(PROTO, path, key=key)
    assert list(clf.classes_) == js["classes"] == ["a", "b", "ü"]
    assert clf.ink == js["ink"] == "auto"
    np.testing.assert_allclose(clf.decision_function(QUERY), np.array(js["logits"], np.float32), atol=LOGIT_TOL, rtol=0)
    assert list(clf.predict(QUERY)) == js["predictions"]
    if key is None:      # the same content: Python writes the same bytes the JS runtime wrote
        clf.save(tmp_path / "py.state")
        assert (tmp_path / "py.state").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "aes-256-gcm"])
def test_a_state_saved_by_python_loads_in_js_with_the_same_predictions(node, tmp_path, key):
    clf = FewShotClassifier(PROTO, ink="high").fit(SUPPORT, [3, 3, 3, 10, 10, 10, 2, 2, 2])
    clf.forget(2)
    clf.save(tmp_path / "py.state", key=key)
    js = _js(node, {"op": "load", "bundle": str(PROTO), "state": str(tmp_path / "py.state"),
                    "key": key.hex() if key else None, "query": _wire(QUERY)})
    assert js["classes"] == [3, 10] and js["counts"] == [[3, 3], [10, 3]] and js["ink"] == "high"
    np.testing.assert_allclose(np.array(js["logits"], np.float32), clf.decision_function(QUERY), atol=LOGIT_TOL, rtol=0)
    assert js["predictions"] == [int(v) for v in clf.predict(QUERY)]


def test_refine_pool_and_recurrent_memory_cross_both_ways(node, tmp_path):
    unlabeled = _images(3, 6)
    js = _js(node, {"op": "fit-save", "bundle": str(REFINE), "precision": "fp32", "support": _wire(SUPPORT),
                    "labels": LABELS, "unlabeled": _wire(unlabeled), "query": _wire(QUERY), "out": str(tmp_path / "r.state")})
    clf = FewShotClassifier.load(REFINE, tmp_path / "r.state", precision="fp32")
    assert len(clf._pool) == 6
    np.testing.assert_allclose(clf.decision_function(QUERY), np.array(js["logits"], np.float32), atol=1e-4, rtol=0)

    online = FewShotClassifier(RECURRENT)
    online.partial_fit(SUPPORT[:6], LABELS[:6])
    online.partial_fit(SUPPORT[6:], LABELS[6:])
    online.save(tmp_path / "m.state", key=KEY)
    js = _js(node, {"op": "load", "bundle": str(RECURRENT), "state": str(tmp_path / "m.state"), "key": KEY.hex(),
                    "query": _wire(QUERY)})
    assert js["classes"] == ["a", "b", "ü"] and js["counts"] == [["a", 3], ["b", 3], ["ü", 3]]
    np.testing.assert_allclose(np.array(js["logits"], np.float32), online.decision_function(QUERY), atol=1e-4, rtol=0)
    js = _js(node, {"op": "fit-save", "bundle": str(RECURRENT), "support": _wire(SUPPORT), "labels": LABELS,
                    "query": _wire(QUERY), "out": str(tmp_path / "m2.state")})
    back = FewShotClassifier.load(RECURRENT, tmp_path / "m2.state")
    assert back.class_counts() == {"a": 3, "b": 3, "ü": 3}
    np.testing.assert_allclose(back.decision_function(QUERY), np.array(js["logits"], np.float32), atol=1e-4, rtol=0)


def test_js_refuses_a_python_state_of_another_bundle_or_with_a_wrong_key(node, tmp_path):
    FewShotClassifier(PROTO).fit(SUPPORT, LABELS).save(tmp_path / "py.state", key=KEY)
    wrong = _js(node, {"op": "load", "bundle": str(PROTO), "state": str(tmp_path / "py.state"), "key": "00" * 32,
                       "query": _wire(QUERY[:1])})
    assert wrong["error"]["name"] == "StateError" and "wrong key" in wrong["error"]["message"]
    other = _js(node, {"op": "load", "bundle": str(REFINE), "state": str(tmp_path / "py.state"), "key": KEY.hex(),
                       "query": _wire(QUERY[:1])})
    assert other["error"]["name"] == "StateError" and "saved for another bundle" in other["error"]["message"]


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "aes-256-gcm"])
def test_regression_states_cross_both_ways(node, tmp_path, key):
    bundle = REPO / "models" / "sinusoid-alpaca"
    x, y = [[0.5], [1.2], [-3.0], [2.0], [4.0]], [0.1, 0.8, -1.4, 1.1, -0.7]
    groups = ["phone", "phone", "phone", "watch", "watch"]
    query = [[0.0], [4.5], [-2.2]]
    js = _js(node, {"op": "regress-save", "bundle": str(bundle), "x": x, "y": y, "groups": groups, "query": query,
                    "out": str(tmp_path / "js.state"), "key": key.hex() if key else None})
    reg = FewShotRegressor.load(bundle, tmp_path / "js.state", key=key)
    assert reg.groups_ == js["groups"] == ["phone", "watch"]
    mean, std = reg.predict(np.array(query, np.float32), return_std=True)
    np.testing.assert_allclose(mean.ravel(), js["predictions"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std.ravel(), js["std"], rtol=1e-4, atol=1e-4)
    if key is None:      # Python keeps the JS sums as they are and writes the same bytes
        reg.save(tmp_path / "py.state")
        assert (tmp_path / "py.state").read_bytes() == (tmp_path / "js.state").read_bytes()
    py = FewShotRegressor(bundle).fit(np.array(x, np.float32), np.array(y), groups=groups)
    py.save(tmp_path / "py2.state", key=key)
    back = _js(node, {"op": "regress-load", "bundle": str(bundle), "state": str(tmp_path / "py2.state"),
                      "key": key.hex() if key else None, "query": query})
    mean, std = py.predict(np.array(query, np.float32), return_std=True)
    np.testing.assert_allclose(back["predictions"], mean.ravel(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(back["std"], std.ravel(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("passphrase,salt,iterations", [
    ("correct horse battery staple", b"0123456789abcdef", 1000),
    ("pässwörd 🔑", bytes(range(16, 48)), 600_000),
])
def test_derive_state_key_equals_python_pbkdf2(node, passphrase, salt, iterations):
    js = _js(node, {"op": "derive", "passphrase": passphrase, "salt": salt.hex(), "iterations": iterations})
    assert js["key"] == hashlib.pbkdf2_hmac("sha256", passphrase.encode(), salt, iterations, 32).hex()
