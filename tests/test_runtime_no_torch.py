"""The device path never imports torch: checked in fresh interpreters (this process has torch loaded)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgemeta.runtime import FewShotClassifier


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_runtime_loads_fits_and_predicts_without_torch(bundle_dir, bundle, task, tmp_path):
    sx, sy, qx, _ = task
    np.savez(tmp_path / "task.npz", sx=sx, sy=sy, qx=qx)
    out = tmp_path / "pred.json"
    proc = run_python(f"""
        import json, sys
        import numpy as np
        import edgemeta.runtime
        from edgemeta.runtime import Bundle, FewShotClassifier
        t = np.load({str(tmp_path / "task.npz")!r}, allow_pickle=False)
        clf = FewShotClassifier(Bundle.load({str(bundle_dir)!r})).fit(t["sx"], t["sy"])
        pred = clf.predict(t["qx"]).tolist()
        proba = clf.predict_proba(t["qx"]).tolist()
        heavy = sorted(m for m in ("torch", "onnx", "tqdm") if m in sys.modules)
        json.dump({{"pred": pred, "proba": proba, "heavy": heavy}}, open({str(out)!r}, "w"))
    """)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["heavy"] == []
    # and it computed the same thing as this (torch-importing) process does
    clf = FewShotClassifier(bundle).fit(sx, sy)
    assert res["pred"] == clf.predict(qx).tolist()
    np.testing.assert_allclose(res["proba"], clf.predict_proba(qx), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("module", ["edgemeta", "edgemeta.runtime", "edgemeta.contract", "edgemeta.evaluation",
                                    "edgemeta.data", "edgemeta.data.sources", "edgemeta.metrics", "edgemeta.cli"])
def test_device_side_modules_do_not_import_torch(module):
    proc = run_python(f"import sys, {module}; print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_the_check_can_fail():
    """Sanity check of the method: the workstation side does pull torch in."""
    proc = run_python("import sys, edgemeta.train.model; print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_evaluation_runs_without_torch(bundle_dir, tmp_path, lake_test):
    """`edgemeta eval`'s code path (evaluate_episodes on a ClassImages) in a torch-free interpreter."""
    np.savez(tmp_path / "few.npz", images=lake_test.images[:200].reshape(10, 20, 28, 28))
    proc = run_python(f"""
        import json, sys
        from edgemeta.contract.preprocess import default_spec
        from edgemeta.data.files import load_class_npz
        from edgemeta.evaluation import evaluate_episodes
        from edgemeta.runtime import Bundle
        data = load_class_npz({str(tmp_path / "few.npz")!r}, default_spec())
        res = evaluate_episodes(Bundle.load({str(bundle_dir)!r}), data, 5, 1, 5, 10)
        print(json.dumps({{"acc": res["accuracy"], "torch": "torch" in sys.modules}}))
    """)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["torch"] is False and res["acc"] > 70.0   # 5-way 1-shot, 250 queries: tiny run ~88 %, untrained ~53 %
