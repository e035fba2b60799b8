"""The JavaScript runtime learns online with a recurrent bundle exactly like the Python runtime.

``js/test/recurrent-bundle`` is a small untrained recurrent bundle (conv4 of width 16,
memory: GRU state 16, the class mean (16-d) and the count; committed, since an export is not byte-reproducible). :func:`fixture` replays a
sequence of ``partial_fit`` / ``forget`` steps through the Python runtime and records, after each,
the classes, samples per class, the memory ``[C, H]`` and the logits of fixed queries;
``js/test/recurrent.test.js`` replays it in Node and must match (memory within 1e-5,
logits within 1e-4, same predictions). The committed fixture is regenerated and compared here, so it
cannot go stale. Rewrite both with::

    python tests/test_recurrent_node.py --write-bundle     # only when the contract changes
    python tests/test_recurrent_node.py                    # the fixture, from the committed bundle
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "js"
BUNDLE = NODE_DIR / "test" / "recurrent-bundle"
FIXTURE = NODE_DIR / "test" / "recurrent-case.json"
FLOAT_TOL = 1e-6


def pack(a: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(a).tobytes(), 9)).decode("ascii")


def unpack(s: str, dtype: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(s)), dtype)


def images(g: np.random.Generator, n: int) -> list[np.ndarray]:
    """Random uint8 drawings of a few sizes (28x28 and non-square ones the bundle resizes)."""
    shapes = [(28, 28), (40, 33), (105, 105)]
    return [((g.random(shapes[i % 3]) < 0.2) * 255).astype(np.uint8) for i in range(n)]


def encoded(img: np.ndarray) -> dict[str, Any]:
    return {"dtype": "uint8", "height": int(img.shape[0]), "width": int(img.shape[1]), "zlib": pack(img)}


STEPS: list[tuple[str, Any]] = [("partial_fit", ["a", "a"]), ("partial_fit", ["b", "c", "b", "a", "c"]),
                                ("partial_fit", ["a", "a", "c"]), ("forget", "b"), ("partial_fit", ["d", "d", "c"])]


def fixture(bundle_dir: Path = BUNDLE) -> dict[str, Any]:
    """The online-learning case as the Python runtime computes it."""
    from edgemeta.runtime import FewShotClassifier

    g = np.random.default_rng(2024)
    clf = FewShotClassifier(bundle_dir, ink="high")
    query = images(g, 6)
    steps = []
    for op, arg in STEPS:
        step: dict[str, Any] = {"op": op}
        if op == "partial_fit":
            batch = images(g, len(arg))
            clf.partial_fit(batch, arg)
            step.update(images=[encoded(x) for x in batch], labels=arg)
        else:
            clf.forget(arg)
            step["label"] = arg
        head = clf.classes_
        step["classes"] = None if head is None else [str(c) for c in head]
        step["counts"] = {str(k): v for k, v in clf.class_counts().items()}
        step["memory"] = pack(clf._memory.memory.astype("<f4"))
        step["logits"] = None if head is None else pack(clf.decision_function(query).astype("<f4"))
        steps.append(step)
    return {"bundle": "recurrent-bundle", "ink": "high", "hidden": clf._update.hidden,
            "query": [encoded(x) for x in query], "steps": steps}


def write_bundle_dir(out: Path = BUNDLE) -> None:
    """A seeded untrained conv4 (width 16, small enough to commit) + recurrent (GRU 16 beside the class mean: memory 16 + 16 + 1) bundle."""
    import torch

    from edgemeta.contract.bundle import write_bundle
    from edgemeta.contract.manifest import build_manifest
    from edgemeta.train.export import OPSET, graphs_from_model
    from edgemeta.train.model import FewShotModel
    from edgemeta.train.recurrent_export import recurrent_extras

    shutil.rmtree(out, ignore_errors=True)
    torch.manual_seed(21)
    model = FewShotModel("conv4", "recurrent", backbone_kwargs={"hidden": 16}, method_kwargs={"hidden": 16, "memory": "class_mean"}).eval()
    with torch.no_grad():
        for p in model.method.parameters():
            p.add_(0.1 * torch.randn_like(p))
    extra, sections = recurrent_extras(model.method)
    manifest = build_manifest(method="recurrent", image_size=(28, 28), embedding_dim=model.embedding_dim,
                              head_outputs=model.method.param_names, head_hparams=model.method.hparams(),
                              provenance={"dataset": None, "backbone": "conv4 (width 16)", "seed": 21, "trained": False,
                                          "note": "untrained recurrent bundle for Node parity tests; not for use"},
                              parity={}, onnx_opset=OPSET, torch_version=torch.__version__)
    manifest.update(sections)
    write_bundle(out, manifest, {**graphs_from_model(model, (1, 28, 28)), **extra})


def _same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            if k in ("memory", "logits") and a[k] is not None and b[k] is not None:
                np.testing.assert_allclose(unpack(a[k], "<f4"), unpack(b[k], "<f4"), atol=FLOAT_TOL, err_msg=f"{where}.{k}")
            else:
                _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_committed_recurrent_fixture_is_current():
    if not (BUNDLE / "manifest.json").is_file():  # pragma: no cover - committed with the checkout
        pytest.skip(f"{BUNDLE} not found")
    _same(fixture(), json.loads(FIXTURE.read_text()), "fixture")


def test_node_learns_online_like_python():
    from test_node_example import _node          # skips where Node.js or its packages are missing

    node = _node()
    proc = subprocess.run([node, "--test", "test/recurrent.test.js"], cwd=NODE_DIR, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "# fail 0" in proc.stdout, (proc.stdout + proc.stderr)[-6000:]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if "--write-bundle" in sys.argv:
        write_bundle_dir()
    FIXTURE.write_text(json.dumps(fixture(), indent=1) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size:,d} bytes)")
