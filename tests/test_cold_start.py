"""Cold start: a fresh process that loads a bundle folder and predicts imports only what that needs;
what it leaves out still loads on first use (zip bundles, state files, the head ensemble, recurrent
bundles); choosing the classifier's class reads a bundle folder's manifest only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPACT = ROOT / "models" / "omniglot-conv4-proto"
LAZY = ("zipfile", "zlib", "tempfile", "shutil", "threading", "secrets", "random", "hmac", "csv",
        "edgemeta.runtime.state", "edgemeta.contract.atomic_files", "edgemeta.contract.bundle_zip",
        "edgemeta.runtime.ensemble", "edgemeta.runtime.recurrent_memory", "edgemeta.runtime.regressor",
        "edgemeta.runtime.regression_bundle", "edgemeta.runtime.regression_state", "edgemeta.contract.manifest",
        "edgemeta.contract.image_files", "edgemeta.contract.regression_csv",
        "torch", "PIL", "typer", "cryptography")

PREDICT = r"""
import json, sys
import numpy as np
import onnxruntime
theirs = set(sys.modules)            # what numpy and onnxruntime import themselves is not the runtime's
from edgemeta.runtime import FewShotClassifier
clf = FewShotClassifier(sys.argv[1])
x = (np.arange(6 * 28 * 28, dtype=np.float32).reshape(6, 28, 28) % 7) / 6
clf.fit(x[:5], ["a", "b", "c", "d", "e"])
answer = clf.predict(x[5:]).tolist()
loaded = [m for m in json.loads(sys.argv[2]) if m in sys.modules and m not in theirs]
print(json.dumps({"answer": answer, "loaded": loaded}))
"""

ON_DEMAND = r"""
import sys
import numpy as np
import edgemeta.runtime as rt
from edgemeta.contract.bundle import zip_bundle, read_bundle
clf = rt.FewShotClassifier(sys.argv[1])
x = (np.arange(6 * 28 * 28, dtype=np.float32).reshape(6, 28, 28) % 5) / 4
clf.fit(x[:4], [0, 0, 1, 1])
state, zipped = sys.argv[2] + "/me.state", sys.argv[2] + "/b.zip"
clf.save(state)
again = rt.FewShotClassifier.load(sys.argv[1], state)
assert (again.predict(x[4:]) == clf.predict(x[4:])).all()
zip_bundle(sys.argv[1], zipped)
assert read_bundle(zipped)[0] == read_bundle(sys.argv[1])[0]
assert rt.HeadEnsemble.__name__ == "HeadEnsemble"
try:
    rt.NoSuchThing
except AttributeError as exc:
    assert "NoSuchThing" in str(exc)
else:
    raise AssertionError("edgemeta.runtime.NoSuchThing should not exist")
print("ok")
"""


def _shipped() -> str:
    if not (COMPACT / "manifest.json").is_file():  # pragma: no cover - shipped with the checkout
        pytest.skip(f"shipped bundle not found at {COMPACT}")
    return str(COMPACT)


def test_predicting_from_a_bundle_folder_imports_no_zip_state_or_writer_modules():
    p = subprocess.run([sys.executable, "-c", PREDICT, _shipped(), json.dumps(LAZY)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["answer"][0] in list("abcde")
    assert out["loaded"] == []


def test_modules_left_out_of_start_up_load_when_used(tmp_path):
    p = subprocess.run([sys.executable, "-c", ON_DEMAND, _shipped(), str(tmp_path)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok"


def test_cold_start_tool_reports_every_phase():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import cold_start
    finally:
        sys.path.remove(str(ROOT / "tools"))
    run = cold_start.one_run(_shipped(), "auto", None, None)
    assert set(cold_start.PHASES) <= set(run)
    for phase in cold_start.PHASES:
        wall, cpu = run[phase]
        assert wall > 0 and cpu >= 0
    assert run["total"][0] >= run["import"][0] and run["peak_rss_mb"] > 10
    assert Path(run["package"]).parent == ROOT / "edgemeta"
    assert "onnxruntime" in run["modules"] and "zipfile" not in run["modules"]


def test_choosing_the_classifier_reads_a_folder_manifest_only(tmp_path):
    from edgemeta.contract.bundle import read_bundle, read_manifest
    from edgemeta.errors import BundleError

    folder = tmp_path / "b"
    shutil.copytree(_shipped(), folder)
    assert read_manifest(folder) == read_bundle(folder)[0]
    graph = folder / "backbone.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"x")            # a listed file altered: only a full read sees it
    assert read_manifest(folder)["method"] == "proto"
    with pytest.raises(BundleError, match="sha256 of backbone.onnx"):
        read_bundle(folder)
    manifest = folder / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"proto"', b'"ridge"', 1))
    with pytest.raises(BundleError, match="altered after export"):
        read_manifest(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        read_manifest(folder)
    with pytest.raises(BundleError, match="bundle not found"):
        read_manifest(tmp_path / "missing")


def test_cold_start_tool_measures_a_copy_without_bytecode(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import cold_start
    finally:
        sys.path.remove(str(ROOT / "tools"))
    package = tmp_path / "checkout" / "edgemeta"
    for name in ("__init__.py", "runtime/__init__.py", "runtime/__pycache__/__init__.cpython-311.pyc",
                 "__pycache__/__init__.cpython-311.pyc", "stale.pyc"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(name)
    parent = Path(cold_start.copy_package(package, tmp_path / "measured"))
    copied = sorted(str(p.relative_to(parent / "edgemeta")) for p in (parent / "edgemeta").rglob("*"))
    assert copied == ["__init__.py", "runtime", "runtime/__init__.py"]
    assert (parent / "edgemeta" / "runtime" / "__init__.py").read_text() == "runtime/__init__.py"


def test_a_classifier_from_a_bundle_folder_reads_and_hashes_each_listed_file_once(monkeypatch):
    from edgemeta.contract import bundle as contract_bundle
    from edgemeta.runtime import FewShotClassifier

    checked: list[str] = []
    real = contract_bundle.check_file

    def counting(name, *args, **kwargs):
        checked.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(contract_bundle, "check_file", counting)
    clf = FewShotClassifier(_shipped())
    assert sorted(checked) == sorted(clf.bundle.manifest["files"])
