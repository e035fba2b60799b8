"""Regression meta-training and export: a short run learns, an interrupted run resumed equals an
uninterrupted one, the CLI refuses what it cannot do, and export writes a version-3 bundle only past
its parity gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from edgemeta.cli import app  # noqa: E402
from edgemeta.errors import ExportError  # noqa: E402
from edgemeta.train.regression import export as reg_export  # noqa: E402
from edgemeta.train.regression.meta_train import RegressionConfig, train_regression  # noqa: E402


def _cfg(method: str, steps: int) -> RegressionConfig:
    return RegressionConfig(method=method, steps=steps, tasks=8, queries=20, val_every=4, val_tasks=30,
                            lr_halve_every=100, hidden=[16, 16])


@pytest.mark.parametrize("method", ["alpaca", "metasgd"])
def test_a_short_run_lowers_the_validation_error(tmp_path, method):
    first = train_regression(tmp_path / "a", _cfg(method, 4), log=lambda s: None)
    best = train_regression(tmp_path / "b", _cfg(method, 60), log=lambda s: None)
    assert best["score"] < first["score"]
    assert {"run.json", "best.npz", "best.json", "last.npz", "last.json"} <= {p.name for p in (tmp_path / "b").iterdir()}


def test_resumed_run_equals_uninterrupted(tmp_path):
    whole = train_regression(tmp_path / "whole", _cfg("alpaca", 12), log=lambda s: None)
    train_regression(tmp_path / "parts", _cfg("alpaca", 8), log=lambda s: None)
    run = json.loads((tmp_path / "parts" / "run.json").read_text())
    run["config"]["steps"] = 12
    (tmp_path / "parts" / "run.json").write_text(json.dumps(run))
    resumed = train_regression(tmp_path / "parts", resume=True, log=lambda s: None)
    assert resumed["step"] == whole["step"]
    a, b = (np.load(tmp_path / d / "last.npz") for d in ("whole", "parts"))
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_cli_train_refuses_what_it_cannot_do(tmp_path):
    run = CliRunner().invoke
    r = run(app, ["train", "--task", "waves", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--task 'waves' is not known" in r.output
    r = run(app, ["train", "--task", "sinusoid", "--method", "proto", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "not a regression rule" in r.output
    r = run(app, ["train", "--task", "sinusoid", "--method", "metasgd", "--out", str(tmp_path / "r"), "--episodes", "2"])
    assert r.exit_code == 0, r.output
    r = run(app, ["train", "--task", "sinusoid", "--method", "metasgd", "--out", str(tmp_path / "r"), "--episodes", "2"])
    assert r.exit_code == 2 and "already holds a run" in r.output
    r = run(app, ["train", "--task", "sinusoid", "--out", str(tmp_path / "none"), "--resume"])
    assert r.exit_code == 2 and "no run.json" in r.output
    r = run(app, ["train", "--task", "sinusoid", "--method", "metasgd", "--out", str(tmp_path / "k"),
                  "--method-kwargs", '{"stepz": 3}'])
    assert r.exit_code == 2 and "do not fit rule 'metasgd'" in r.output
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "run.json").write_text(json.dumps({"kind": "regression", "config": {}}))
    r = run(app, ["export", str(tmp_path / "half"), str(tmp_path / "out")])
    assert r.exit_code == 2 and "has no best.npz" in r.output


@pytest.mark.parametrize("method", ["alpaca", "metasgd"])
def test_export_writes_a_version_3_bundle_past_its_parity_gate(tmp_path, method):
    from edgemeta.runtime.regressor import FewShotRegressor

    train_regression(tmp_path / "run", _cfg(method, 8), log=lambda s: None)
    m = reg_export.export_regression(tmp_path / "run", tmp_path / "b", val_tasks=20)
    saved = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert saved["format_version"] == 3 and saved["method"] == method
    assert m["parity"]["prediction_max_rel"] <= reg_export.PREDICTION_TOL and m["parity"]["tasks_checked"] == 24
    assert set(saved["validation"]) == {"k5", "k10", "k20", "split"} and saved["validation"]["k5"]["tasks"] == 20
    reg = FewShotRegressor(tmp_path / "b").fit(np.zeros((3, 1), np.float32), [0.0, 0.0, 0.0])
    assert np.isfinite(reg.predict(np.ones((2, 1), np.float32))).all()


def test_export_refuses_when_torch_and_the_graphs_disagree(tmp_path, monkeypatch):
    train_regression(tmp_path / "run", _cfg("alpaca", 4), log=lambda s: None)
    monkeypatch.setattr(reg_export, "PREDICTION_TOL", 0.0)        # any float32 difference now fails the gate
    with pytest.raises(ExportError, match="parity gate failed"):
        reg_export.export_regression(tmp_path / "run", tmp_path / "b", val_tasks=5)
    assert not (tmp_path / "b").exists()
