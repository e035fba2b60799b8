"""The Node runtime (examples/node/regressor.js) adapts the shipped sinusoid bundles like the Python runtime.

:func:`fixture` replays fit / partial_fit / forget(group) through the Python FewShotRegressor and
records the predictions (and std) at fixed queries after each step; ``examples/node/test/regressor.test.js``
replays the same steps in Node and must match within 1e-4. The committed fixture is regenerated and
compared here, so it cannot go stale. Rewrite it with ``python tests/test_regressor_node.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "examples" / "node"
FIXTURE = NODE_DIR / "test" / "regression-case.json"     # not in fixtures/: that holds tools/node_fixture.py's output
BUNDLES = ("sinusoid-alpaca", "sinusoid-metasgd")
STEPS: list[tuple[str, Any, int]] = [("fit", "phone", 6), ("partial_fit", "watch", 5), ("partial_fit", "phone", 3),
                                     ("forget", "phone", 0)]


def _floats(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a, np.float64).ravel()]


def fixture() -> dict[str, Any]:
    """Each bundle's steps and the Python runtime's answers (float32 values written as float64 numbers)."""
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
        out["cases"].append({"bundle": f"models/{name}", "query": _floats(query), "steps": steps})
    return out


def test_committed_regression_fixture_is_current():
    want = json.loads(FIXTURE.read_text())
    got = fixture()
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
