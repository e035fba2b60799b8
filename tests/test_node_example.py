"""The JavaScript runtime (``js``, run by Node.js over onnxruntime-node) personalises bundles exactly like the Python runtime.

``tools/node_fixture.py`` writes what the Python runtime computes and ``node --test`` checks that
``js/src/`` over onnxruntime-node reproduces it: logits within 1e-4 (bit-identical
preprocessing and logits for the automatic-ink and colour case), identical predictions, forget / add
class, tampered bundles refused, the canonical-JSON integrity digest byte for byte.

- The committed fixtures (``js/test/fixtures``, shipped bundles only) let ``npm test`` run
  on its own; :func:`test_committed_node_fixtures_are_current` regenerates them and compares, so they
  cannot go stale.
- ``--full`` fixtures (every adaptation method, a .zip bundle) are written into a temporary folder.

The Node runs are skipped where Node.js or js/'s npm packages (onnxruntime-node) are not installed.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "js"
COMMITTED = NODE_DIR / "test" / "fixtures"
INSTALL = "(cd js && npm ci --ignore-scripts --no-audit --no-fund)"
FLOAT_TOL = 1e-6  # computed logits / probabilities may differ in the last bits on another CPU
PATH_KEYS = ("bundle", "shipped", "reformatted_manifest", "zip")  # relative to the fixtures folder


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip(f"Node.js not found: install Node.js >= 20 and npm, then run {INSTALL}")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    major = int(re.match(r"v(\d+)", version).group(1)) if re.match(r"v(\d+)", version) else 0
    if major < 20:                      # DecompressionStream("deflate-raw") and WebCrypto as globals
        pytest.skip(f"Node.js {version} is too old for `node --test`: install Node.js >= 20, then run {INSTALL}")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip(f"js/node_modules is missing: run {INSTALL}")
    return node


def _run_node_tests(node: str, fixtures: Path | None, min_pass: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGEMETA_NODE_FIXTURES"}
    if fixtures is not None:
        env["EDGEMETA_NODE_FIXTURES"] = str(fixtures)
    proc = subprocess.run([node, "--test"], cwd=NODE_DIR, capture_output=True, text=True, timeout=600, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-12000:]
    assert re.search(r"^# fail 0$", proc.stdout, re.M), out[-4000:]
    passed = int(re.search(r"^# pass (\d+)$", proc.stdout, re.M).group(1))
    assert passed >= min_pass, out[-4000:]


def _target(folder: Path, rel: str) -> Path:
    """What a path in the fixtures names: inside their folder relative to it, else the resolved path."""
    full = (folder / rel).resolve()
    return full.relative_to(folder.resolve()) if full.is_relative_to(folder.resolve()) else full


def _same(a: Any, b: Any, where: str, dirs: tuple[Path, Path]) -> None:
    """JSON values equal: packed bytes compared unpacked, paths resolved against their fixture folders
    ``dirs``, floats within FLOAT_TOL, all else exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            if k in ("zlib", "preprocessed"):
                assert zlib.decompress(base64.b64decode(a[k])) == zlib.decompress(base64.b64decode(b[k])), f"{where}.{k}"
            elif k in PATH_KEYS:
                assert _target(dirs[0], a[k]) == _target(dirs[1], b[k]), f"{where}.{k}: {a[k]} != {b[k]}"
            else:
                _same(a[k], b[k], f"{where}.{k}", dirs)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]", dirs)
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL), f"{where}: {a} != {b}"
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def test_committed_node_fixtures_are_current(tmp_path, omniglot_root):
    fresh = tmp_path / "fixtures"
    gen = subprocess.run([sys.executable, str(REPO / "tools" / "node_fixture.py"), str(fresh),
                          "--omniglot", str(omniglot_root)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert gen.returncode == 0, gen.stdout + gen.stderr
    names = sorted(p.name for p in COMMITTED.iterdir())
    assert names == sorted(p.name for p in fresh.iterdir()), \
        "js/test/fixtures differ from what tools/node_fixture.py writes: regenerate them"
    size = sum(p.stat().st_size for p in COMMITTED.iterdir())
    assert size < 600_000, f"committed Node fixtures are {size} bytes; keep them under 600 kB"
    for name in names:
        if name.endswith(".json") and name != "reformatted-manifest.json":
            _same(json.loads((COMMITTED / name).read_text("utf-8")), json.loads((fresh / name).read_text("utf-8")), name,
                  (COMMITTED, fresh))
        else:
            assert (COMMITTED / name).read_bytes() == (fresh / name).read_bytes(), name


def test_npm_test_passes_on_the_committed_fixtures():
    """What a JavaScript developer runs (`npm test`): no Python, no Omniglot needed."""
    _run_node_tests(_node(), None, min_pass=25)


def test_node_runtime_matches_python_runtime_for_every_method(tmp_path, omniglot_root):
    node = _node()
    fixtures = tmp_path / "fixtures"
    gen = subprocess.run([sys.executable, str(REPO / "tools" / "node_fixture.py"), str(fixtures), "--full",
                          "--omniglot", str(omniglot_root)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert gen.returncode == 0, gen.stdout + gen.stderr
    cases = json.loads((fixtures / "index.json").read_text())["cases"]
    assert {c.split("-")[0] for c in cases} >= {"proto", "metasgd", "ridge", "finetune"}
    _run_node_tests(node, fixtures, min_pass=35)


def test_the_node_example_runs_on_the_js_runtime(omniglot_root):
    """examples/node/example.js (edgemeta-js over onnxruntime-node): fit, addClass, forget, open set and
    an encrypted state saved and restored with the same predictions, on raw Omniglot test drawings."""
    node = _node()
    example = REPO / "examples" / "node"
    if not (example / "node_modules" / "onnxruntime-node").is_dir() or not (example / "node_modules" / "edgemeta-js").exists():
        pytest.skip("examples/node/node_modules is missing: run (cd examples/node && npm ci --ignore-scripts)")
    proc = subprocess.run([node, "example.js", str(REPO / "models" / "omniglot-conv4-proto"), str(omniglot_root)],
                          cwd=example, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"^predict 75 new drawings: \d+\.\d % correct$", out, re.M), out
    assert re.search(r"^forget \S+: 5 classes left; predicted 0 times$", out, re.M), out
    assert re.search(r"^saveState: \d+ bytes \(AES-256-GCM\); restored: 5 classes, the same predictions on 90 drawings$",
                     out, re.M), out
