"""The JavaScript runtime's FewShotClassifier reads vector-input classifier bundles (``vector_input``
section, inputs ``[N, D]``) as the Python runtime does: a small proto-over-MLP bundle (built as
tests/test_vector_input.py builds it) gives the same labels, logits and probabilities through both runtimes
(within 1e-5) for fit, partialFit, forget and open-set rejection, in both JS input forms (Arrays of rows and a
packed ``{ data, rows, cols }``); a state saved by one runtime loads in the other with the same predictions;
JS refuses wrong widths, NaN, empty and wrongly typed inputs with InputError. Skipped without Node.js or
``js/node_modules``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemeta.runtime import FewShotClassifier
from edgemeta.runtime.regressor import FewShotRegressor

REPO = Path(__file__).resolve().parents[1]
METASGD = REPO / "models" / "sinusoid-metasgd"
KEY = bytes(range(1, 33))
TOL = 1e-5
THRESHOLD = -2.0            # an open-set threshold on the max logit that some queries fall below

# One JSON request on stdin, one JSON answer on stdout (run with cwd js/).
SCRIPT = r"""
import fs from 'node:fs';
import * as ort from 'onnxruntime-node';
import { FewShotClassifier, FewShotRegressor, RegressionBundle, fromHex } from './src/index.js';
import { sourceFromPath } from './src/node.js';

const req = JSON.parse(fs.readFileSync(0, 'utf8'));
const key = req.key ? fromHex(req.key) : null;
const packed = (rows) => ({ data: Float64Array.from(rows.flat()), rows: rows.length, cols: rows[0].length });
const form = (rows) => (req.form === 'packed' ? packed(rows) : req.form === 'float32' ? rows.map((r) => Float32Array.from(r)) : rows);
if (req.regress) {        // the regressor reads the same input forms (one checkVectors, vectors.js)
  const reg = new FewShotRegressor(await RegressionBundle.load(ort, sourceFromPath(req.bundle)));
  await reg.fit(form(req.support), req.targets);
  process.stdout.write(JSON.stringify(await reg.predict(form(req.query))));
  process.exit(0);
}
const clf = await FewShotClassifier.load(ort, sourceFromPath(req.bundle), { unknownThreshold: req.threshold });
const out = {};
if (req.state) await clf.loadState(fs.readFileSync(req.state), { key });
if (req.support) await clf.fit(form(req.support), req.labels);
for (const step of req.steps ?? []) {
  if (step.label !== undefined) await clf.addClass(step.label, form(step.rows));
  else await clf.partialFit(form(step.rows), step.labels);
}
for (const label of req.forget ?? []) await clf.forget(label);
if (req.save) fs.writeFileSync(req.save, await clf.saveState({ key }));
if (req.query) {
  const q = form(req.query);
  const logits = await clf.decisionFunction(q);
  out.classes = clf.classes;
  out.counts = [...clf.classCounts()];
  out.logits = Array.from({ length: logits.n }, (_, r) => Array.from(logits.data.subarray(r * logits.c, (r + 1) * logits.c)));
  out.proba = await clf.predictProba(q);
  out.predictions = await clf.predict(q);
  out.unknown = await clf.predict(q, { rejectUnknown: true });
}
out.refusals = [];
for (const [what, bad] of req.hostile ?? []) {
  const value = bad === 'NaN-row' ? [[NaN, 0, 0, 0]] : bad === 'inf-packed' ? { data: Float32Array.of(0, Infinity, 0, 0), rows: 1, cols: 4 }
    : bad === 'int32-packed' ? { data: Int32Array.of(0, 0, 0, 0), rows: 1, cols: 4 } : bad === 'one-vector' ? Float32Array.of(0, 0, 0, 0)
    : bad === 'empty-packed' ? { data: new Float32Array(0), rows: 0, cols: 4 }
    : bad === 'huge-rows' ? { data: new Float32Array(4), rows: 1e15, cols: 4 } : bad;
  try {
    if (what === 'fit') await clf.fit(value, Array.isArray(value) ? value.map((_, i) => i % 2) : [0, 1]);
    else if (what === 'addClass') await clf.addClass('z', value);
    else await clf.predict(value);
    out.refusals.push(null);
  } catch (e) {
    out.refusals.push({ name: e.name, message: e.message });
  }
}
process.stdout.write(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_vector_input import _vector_classifier_bundle   # skips without torch

    return _vector_classifier_bundle(tmp_path_factory.mktemp("vec"))


def _js(node: str, request: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([node, "--input-type=module", "-e", SCRIPT], input=json.dumps(request), capture_output=True,
                          text=True, cwd=REPO / "js", timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _points(seed: int, per_class: int) -> tuple[np.ndarray, list[str]]:
    """Rows ``float64 [3 * per_class, 4]`` around three centres, with their labels a, b, c."""
    rng = np.random.default_rng(seed)
    centres = np.array([[5.0, 0, 0, 0], [-5.0, 0, 0, 0], [0, 0, 6.0, 0]])
    x = np.concatenate([c + 0.8 * rng.normal(size=(per_class, 4)) for c in centres])
    return x, [c for c in "abc" for _ in range(per_class)]


SUPPORT, LABELS = _points(1, 3)
MORE, MORE_LABELS = _points(2, 1)
QUERY = np.concatenate([_points(3, 4)[0], 30.0 * np.random.default_rng(4).normal(size=(4, 4))])   # 4 far-away rows


def _same(py: FewShotClassifier, js: dict[str, Any]) -> None:
    """The JS answers equal the Python classifier's on QUERY: classes, logits, probabilities, labels."""
    assert js["classes"] == list(py.classes_)
    np.testing.assert_allclose(np.array(js["logits"]), py.decision_function(QUERY), atol=TOL, rtol=0)
    np.testing.assert_allclose(np.array(js["proba"]), py.predict_proba(QUERY), atol=TOL, rtol=0)
    assert js["predictions"] == list(py.predict(QUERY))
    assert js["unknown"] == list(py.predict(QUERY, reject_unknown=True))


@pytest.mark.parametrize("form", ["rows", "float32", "packed"])
def test_fit_and_predict_equal_the_python_runtime(node, bundle, form):
    py = FewShotClassifier(bundle, unknown_threshold=THRESHOLD).fit(SUPPORT, LABELS)
    js = _js(node, {"bundle": str(bundle), "form": form, "threshold": THRESHOLD, "support": SUPPORT.tolist(),
                    "labels": LABELS, "query": QUERY.tolist()})
    _same(py, js)
    assert js["predictions"][:12] == [c for c in "abc" for _ in range(4)]      # the task is easy: all right
    assert "unknown" in js["unknown"][12:]                                           # some far-away rows rejected


def test_partial_fit_add_class_and_forget_equal_the_python_runtime(node, bundle):
    py = FewShotClassifier(bundle, unknown_threshold=THRESHOLD).fit(SUPPORT[:6], LABELS[:6])
    py.partial_fit(MORE[:2], MORE_LABELS[:2])
    py.partial_fit(SUPPORT[6:], LABELS[6:])
    py.partial_fit(MORE[2:], ["d"])
    py.forget("d")
    steps = [{"rows": MORE[:2].tolist(), "labels": MORE_LABELS[:2]}, {"label": "c", "rows": SUPPORT[6:].tolist()},
             {"label": "d", "rows": MORE[2:].tolist()}]          # addClass(label, rows) = partialFit(rows, [label] * n)
    js = _js(node, {"bundle": str(bundle), "form": "packed", "threshold": THRESHOLD, "support": SUPPORT[:6].tolist(),
                    "labels": LABELS[:6], "steps": steps, "forget": ["d"], "query": QUERY.tolist()})
    _same(py, js)
    assert js["counts"] == [["a", 4], ["b", 4], ["c", 3]] == [[k, v] for k, v in py.class_counts().items()]
    js = _js(node, {"bundle": str(bundle), "threshold": THRESHOLD, "support": SUPPORT.tolist(), "labels": LABELS,
                    "forget": ["b"], "query": QUERY.tolist()})
    _same(FewShotClassifier(bundle, unknown_threshold=THRESHOLD).fit(SUPPORT, LABELS).forget("b"), js)


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "aes-256-gcm"])
def test_states_cross_between_the_runtimes(node, bundle, tmp_path, key):
    hexkey = key.hex() if key else None
    js = _js(node, {"bundle": str(bundle), "threshold": THRESHOLD, "support": SUPPORT.tolist(), "labels": LABELS,
                    "save": str(tmp_path / "js.state"), "key": hexkey, "query": QUERY.tolist()})
    back = FewShotClassifier.load(bundle, tmp_path / "js.state", key=key)
    back.unknown_threshold = THRESHOLD
    _same(back, js)
    if key is None:      # the same content: Python writes the bytes the JS runtime wrote
        back.save(tmp_path / "py-again.state")
        assert (tmp_path / "py-again.state").read_bytes() == (tmp_path / "js.state").read_bytes()

    py = FewShotClassifier(bundle, unknown_threshold=THRESHOLD).fit(SUPPORT, [3, 3, 3, 10, 10, 10, 2, 2, 2]).forget(2)
    py.save(tmp_path / "py.state", key=key)
    js = _js(node, {"bundle": str(bundle), "threshold": THRESHOLD, "state": str(tmp_path / "py.state"), "key": hexkey,
                    "query": QUERY.tolist()})
    assert js["counts"] == [[3, 3], [10, 3]]
    _same(py, js)


HOSTILE = [
    ("fit", [[0.0, 1.0, 2.0]] * 2, "3 columns; this bundle takes 4"),     # wrong width
    ("predict", [[0.0] * 5], "5 columns"),
    ("predict", "NaN-row", "row 0 holds NaN"),
    ("predict", "inf-packed", "row 0 holds NaN or infinity"),
    ("predict", [[0, 0, 1e39, 0]], "beyond"),
    ("fit", [], "support set is empty"),
    ("predict", [], "no rows"),
    ("predict", "empty-packed", "no rows"),
    ("addClass", "huge-rows", r"rows: 1000000000000000, cols: 4 \} with 4 values"),
    ("addClass", [[0.0] * 4, [1.0] * 3], "row 1 has 3 columns"),
    ("predict", "x", "is string; expected an Array of rows"),
    ("predict", None, "is null"),
    ("predict", "one-vector", r"one Float32Array.*\(one sample: \[x\]\)"),
    ("predict", "int32-packed", "Float32Array or Float64Array"),
    ("predict", [[0, True, 0, 0]], "a boolean"),
    ("predict", [["0", 0, 0, 0]], "expected real numbers"),
    ("predict", [[0, 0, 0, 0], None], "row 1 is null"),
    ("predict", {"data": [0, 0, 0, 0], "rows": 1, "cols": 4}, "Float32Array or Float64Array"),
]


def test_hostile_vectors_are_refused_with_input_error_in_js(node, bundle):
    js = _js(node, {"bundle": str(bundle), "support": SUPPORT.tolist(), "labels": LABELS,
                    "hostile": [[what, bad] for what, bad, _ in HOSTILE]})
    for (what, bad, message), got in zip(HOSTILE, js["refusals"]):
        assert got is not None, f"{what}({bad!r}) was accepted"
        assert got["name"] == "InputError", (bad, got)
        assert re.search(message, got["message"]), (bad, got["message"])


@pytest.mark.parametrize("form", ["rows", "packed"])
def test_the_regressor_takes_the_same_input_forms(node, form):
    rng = np.random.default_rng(5)
    x, xq = rng.uniform(-5, 5, (10, 1)), rng.uniform(-5, 5, (6, 1))
    y = np.sin(x[:, 0] + 0.5)
    js = _js(node, {"regress": True, "bundle": str(METASGD), "form": form, "support": x.tolist(), "targets": y.tolist(),
                    "query": xq.tolist()})
    py = FewShotRegressor(METASGD).fit(x, y).predict(xq)
    np.testing.assert_allclose(np.array(js["predictions"]), np.asarray(py).reshape(-1), atol=1e-4, rtol=0)
