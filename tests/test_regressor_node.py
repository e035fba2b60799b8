"""The JavaScript runtime (js/src/regressor.js) adapts the shipped sinusoid bundles like the Python runtime.

:func:`fixture` replays fit / partial_fit / forget(group) through the Python FewShotRegressor and
records the predictions (and std) at fixed queries after each step; ``js/test/regressor.test.js``
replays the same steps in Node and must match within 1e-4. After the third step each bundle's state is
saved (``js/test/regression-states``: alpaca plain, metasgd AES-256-GCM with the test key
below); Node loads it, predicts, forgets a group and must match too. The committed fixture and states are
regenerated and compared here (states by their decoded arrays: encryption draws a fresh nonce), so they
cannot go stale. Rewrite them with ``python tests/test_regressor_node.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "js"
STATES = NODE_DIR / "test" / "regression-states"
TEST_KEY = bytes(range(32))          # a test key, public: it protects nothing
FIXTURE = NODE_DIR / "test" / "regression-case.json"     # not in fixtures/: that holds tools/node_fixture.py's output
BUNDLES = ("sinusoid-alpaca", "sinusoid-metasgd")
STEPS: list[tuple[str, Any, int]] = [("fit", "phone", 6), ("partial_fit", "watch", 5), ("partial_fit", "phone", 3),
                                     ("forget", "phone", 0)]


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a, np.float64).ravel()]


def fixture(states: Path = STATES) -> dict[str, Any]:
    """Each bundle's steps and the Python runtime's answers (float32 values written as float64 numbers);
    the states are saved into ``states``."""
    from edgemeta.runtime.regressor import FewShotRegressor

    out: dict[str, Any] = {"tolerance": 1e-4, "cases": []}
    for name in BUNDLES:
        reg = FewShotRegressor(REPO / "models" / name)
        g = np.random.default_rng(7)
        query = g.uniform(-6, 6, size=(12, 1)).astype(np.float32)
        steps = []
        for op, group, n in STEPS:
            step: dict[str, Any] = {"op": op, "group": group}
            if op == "forget":
                reg.forget(group)
            else:
                x = g.uniform(-5, 5, size=(n, 1)).astype(np.float32)
                y = 2.5 * np.sin(x[:, 0] - 0.7) + (0.5 if group == "watch" else 0.0)
                getattr(reg, op)(x, y, groups=group)
                step.update(x=_floats(x), y=_floats(y))
            if reg.bundle.gives_variance:
                pred, std = reg.predict(query, return_std=True)
                step["std"] = _floats(std)
            else:
                pred = reg.predict(query)
            step["predictions"] = _floats(pred)
            step["groups"] = list(reg.groups_)
            steps.append(step)
            if len(steps) == 3:
                key = TEST_KEY if name.endswith("metasgd") else None
                states.mkdir(parents=True, exist_ok=True)
                reg.save(states / f"{name}.state", key=key)
                state = {"file": f"regression-states/{name}.state", "key": key.hex() if key else None, "after_step": 2}
        out["cases"].append({"bundle": f"models/{name}", "query": _floats(query), "steps": steps, "state": state})
    return out


def test_committed_regression_fixture_is_current(tmp_path):
    from edgemeta.runtime.regression_bundle import RegressionBundle
    from edgemeta.runtime.regression_state import read_regression_state

    want = json.loads(FIXTURE.read_text())
    got = fixture(tmp_path)
    for case in want["cases"]:
        b = RegressionBundle.load(REPO / case["bundle"])
        key = bytes.fromhex(case["state"]["key"]) if case["state"]["key"] else None
        fresh, committed = (read_regression_state(d / Path(case["state"]["file"]).name, b.embedding_dim, b.outputs,
                                                  b.identity, key) for d in (tmp_path, STATES))
        assert fresh.groups == committed.groups
        np.testing.assert_allclose(fresh.gram, committed.gram, rtol=1e-12)
        np.testing.assert_allclose(fresh.targets, committed.targets, rtol=1e-12, atol=1e-12)
        assert case["state"] == next(c["state"] for c in got["cases"] if c["bundle"] == case["bundle"])
    assert [c["bundle"] for c in got["cases"]] == [c["bundle"] for c in want["cases"]]
    for a, b in zip(got["cases"], want["cases"]):
        assert a["query"] == b["query"]
        for s, t in zip(a["steps"], b["steps"]):
            assert (s["op"], s["group"], s["groups"], s.get("x"), s.get("y")) == \
                   (t["op"], t["group"], t["groups"], t.get("x"), t.get("y"))
            np.testing.assert_allclose(s["predictions"], t["predictions"], atol=1e-6)
            np.testing.assert_allclose(s.get("std", []), t.get("std", []), atol=1e-6)


def test_node_regressor_matches_python():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_node_example import (
        _node,  # skips where Node.js or its packages are missing
    )

    node = _node()
    proc = subprocess.run([node, "--test", "test/regressor.test.js"], check=False, cwd=NODE_DIR, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "# fail 0" in proc.stdout, (proc.stdout + proc.stderr)[-6000:]


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(fixture(), indent=1) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size:,d} bytes)")
