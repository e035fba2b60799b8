"""The Node.js example (``examples/node``) personalises bundles exactly like the Python runtime.

``tools/node_fixture.py`` writes what the Python runtime computes (shipped proto bundle, and bundles
of every other adaptation method built from random models) and ``node --test`` checks that
``examples/node/edgemeta.js`` over onnxruntime-node reproduces it: logits within 1e-4, identical
predictions, forget / add class, tampered bundles refused, the canonical-JSON integrity digest
byte for byte. About 20 s; skipped where Node.js or the example's npm packages are not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "examples" / "node"
INSTALL = "(cd examples/node && npm ci --ignore-scripts --no-audit --no-fund)"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip(f"Node.js not found: install Node.js >= 18 and npm, then run {INSTALL}")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    major = int(re.match(r"v(\d+)", version).group(1)) if re.match(r"v(\d+)", version) else 0
    if major < 18:
        pytest.skip(f"Node.js {version} is too old for `node --test`: install Node.js >= 18, then run {INSTALL}")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip(f"examples/node/node_modules is missing: run {INSTALL}")
    return node


def test_node_runtime_matches_python_runtime(tmp_path, omniglot_root):
    node = _node()
    fixtures = tmp_path / "fixtures"
    gen = subprocess.run([sys.executable, str(REPO / "tools" / "node_fixture.py"), str(fixtures),
                          "--omniglot", str(omniglot_root)], capture_output=True, text=True, timeout=600)
    assert gen.returncode == 0, gen.stdout + gen.stderr
    proc = subprocess.run([node, "--test"], cwd=NODE_DIR, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "EDGEMETA_NODE_FIXTURES": str(fixtures)})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-12000:]
    assert re.search(r"^# fail 0$", proc.stdout, re.M), out[-4000:]
    passed = int(re.search(r"^# pass (\d+)$", proc.stdout, re.M).group(1))
    assert passed >= 30, out[-4000:]
