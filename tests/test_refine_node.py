"""The JavaScript runtime refines like the Python runtime: ``js/src/refine.js`` against what
``FewShotClassifier`` computes on the committed ``models/omniglot-conv4-proto-refine``.

:func:`refine_case` writes ``js/test/refine-fixture/refine-case.json`` (images, labels, and Python's
answers: refine.onnx on Python's embeddings, logits after fit / partial_fit / add_unlabeled / forget);
:func:`test_committed_refine_fixture_is_current` regenerates it and compares, so it cannot go stale, and
``node --test test/refine.test.js`` checks the Node runtime against it (skipped without Node.js).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemeta.errors import InputError
from edgemeta.runtime import Bundle, FewShotClassifier

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "js"
FIXTURE = NODE_DIR / "test" / "refine-fixture" / "refine-case.json"
BUNDLE = REPO / "models" / "omniglot-conv4-proto-refine"
PLAIN = REPO / "models" / "omniglot-conv4-proto"
FLOAT_TOL = 1e-6        # regenerated floats may differ in the last bits on another CPU


def _pack(a: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(a, "<f4").tobytes(), 9)).decode()


def _image(x: np.ndarray) -> dict[str, Any]:
    return {"dtype": "float32", "height": 28, "width": 28, "zlib": _pack(x)}


def _answers(clf: FewShotClassifier, query: np.ndarray) -> dict[str, Any]:
    logits = clf.decision_function(query)
    return {"classes": [str(c) for c in clf.classes_], "logits": logits.astype(float).round(6).tolist(),
            "predictions": [str(p) for p in clf.predict(query)], "pool_rows": int(len(clf._pool))}


def refine_case() -> dict[str, Any]:
    """What the Python runtime answers on a fixed semi-supervised task (fp32, ink high)."""
    rng = np.random.default_rng(2024)
    base = rng.random((4, 28, 28)) > 0.8
    noisy = lambda c: np.logical_xor(base[c], rng.random((28, 28)) > 0.96).astype(np.float32)  # noqa: E731
    support = np.stack([noisy(c) for c in range(4) for _ in range(2)])
    labels = [n for n in "abcd" for _ in range(2)]
    unlabeled = np.stack([noisy(c % 4) for c in range(10)] + [(rng.random((28, 28)) > 0.8).astype(np.float32)
                                                               for _ in range(2)])
    query = np.stack([noisy(c) for c in range(4) for _ in range(3)])
    bundle = Bundle.load(BUNDLE, precision="fp32")
    new = lambda: FewShotClassifier(bundle, ink="high")  # noqa: E731
    fit = new().fit(support, labels, unlabeled=unlabeled)
    s, u = fit.embed(support), fit.embed(unlabeled)
    onehot = np.eye(4, dtype=np.float32)[np.repeat(np.arange(4), 2)]
    protos = bundle.refiner.refine(s, onehot, u)["prototypes"]
    parts = new()
    parts.partial_fit(support[:4], labels[:4], unlabeled=unlabeled[:5])
    parts.partial_fit(support[4:], labels[4:])
    parts.add_unlabeled(unlabeled[5:])
    forgot = new().fit(support, labels, unlabeled=unlabeled).forget("b")
    try:
        FewShotClassifier(PLAIN, ink="high").fit(support, labels, unlabeled=unlabeled)
        refused = ""
    except InputError as exc:
        refused = str(exc)
    return {
        "bundle": "../../../models/omniglot-conv4-proto-refine", "precision": "fp32", "ink": "high",
        "support": [_image(x) for x in support], "labels": labels, "unlabeled": [_image(x) for x in unlabeled],
        "query": [_image(x) for x in query],
        "embeddings": {"support": _pack(s), "unlabeled": _pack(u), "onehot": _pack(onehot), "ways": 4,
                       "prototypes": protos.astype(float).round(7).reshape(-1).tolist()},
        "expected": {"fit": _answers(fit, query), "parts": _answers(parts, query), "forget_b": _answers(forgot, query),
                     "plain_refuses": refused.replace(str(PLAIN), "PLAIN")},
    }


def _same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= FLOAT_TOL * max(1.0, abs(a)), f"{where}: {a} != {b}"
    elif isinstance(a, str) and len(a) > 200:                  # packed arrays: compare the floats
        x = np.frombuffer(zlib.decompress(base64.b64decode(a)), "<f4")
        y = np.frombuffer(zlib.decompress(base64.b64decode(b)), "<f4")
        np.testing.assert_allclose(x, y, rtol=FLOAT_TOL, atol=FLOAT_TOL, err_msg=where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_committed_refine_fixture_is_current():
    """Regenerate: python -c "import json, tests.test_refine_node as t; t.FIXTURE.write_text(json.dumps(t.refine_case()))" """
    committed = json.loads(FIXTURE.read_text())
    fresh = refine_case()
    _same(fresh, committed)
    assert fresh["expected"]["fit"]["pool_rows"] == 12 and fresh["expected"]["parts"]["pool_rows"] == 12
    assert 0 < fresh["expected"]["forget_b"]["pool_rows"] < 12
    assert "has no refine graph" in fresh["expected"]["plain_refuses"]


def test_node_refines_like_python():
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("Node.js or js/node_modules missing: (cd js && npm ci --ignore-scripts)")
    proc = subprocess.run([node, "--test", "test/refine.test.js"], cwd=NODE_DIR, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]
    assert "# fail 0" in proc.stdout
