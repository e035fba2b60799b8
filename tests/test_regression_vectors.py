"""A regression bundle with several inputs and outputs (D = 3, O = 2), exported from a small torch model
into a temporary folder: the runtime's shapes, its agreement with the torch model, partial_fit/forget
exactness and CSV rows of ``D + O`` numbers, for both rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from edgemeta.cli import app  # noqa: E402
from edgemeta.contract.bundle import write_bundle  # noqa: E402
from edgemeta.runtime.regressor import FewShotRegressor  # noqa: E402
from edgemeta.train.regression.export import regression_graphs, regression_manifest  # noqa: E402
from edgemeta.train.regression.features import VectorFeatures  # noqa: E402
from edgemeta.train.regression.meta_train import RegressionModel  # noqa: E402
from edgemeta.train.regression.rules import make_rule  # noqa: E402

D, O = 3, 2


@pytest.fixture(scope="module", params=["alpaca", "metasgd"])
def exported(request, tmp_path_factory) -> tuple[RegressionModel, Path]:
    torch.manual_seed(3)
    feats = VectorFeatures(D, (12,), mean=[0.0, 1.0, -2.0], std=[1.0, 2.0, 0.5])
    model = RegressionModel(feats, make_rule(request.param, feats.dim, O)).eval()
    if request.param == "metasgd":
        with torch.no_grad():
            model.rule.lr.fill_(0.05)
    out = tmp_path_factory.mktemp(request.param) / "bundle"
    manifest = regression_manifest(model, {"dataset": None}, {}, ["a", "b", "c"], ["u", "v"])
    write_bundle(out, manifest, regression_graphs(model))
    return model, out


def data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, D)).astype(np.float32)
    return x, np.stack([x[:, 0] - 2 * x[:, 2], np.sin(x[:, 1])], 1)


def test_multi_output_shapes_and_torch_agreement(exported):
    model, path = exported
    assert json.loads((path / "manifest.json").read_text())["format_version"] == 3
    xs, ys = data(0, 9)
    xq, _ = data(1, 7)
    reg = FewShotRegressor(path).fit(xs, ys)
    with torch.no_grad():
        mean, var = model.episode(torch.from_numpy(xs), torch.from_numpy(ys).float(), torch.from_numpy(xq))
    if reg.bundle.gives_variance:
        pred, std = reg.predict(xq, return_std=True)
        assert std.shape == (7, O)
        np.testing.assert_allclose(std, np.sqrt(var.numpy()), rtol=1e-4, atol=1e-6)
    else:
        pred = reg.predict(xq)
    assert pred.shape == (7, O)
    np.testing.assert_allclose(pred, mean.numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match=r"\[9\] or \[9, 2\]"):
        reg.fit(xs, ys[:, 0])                        # one column given, two expected


def test_partial_fit_and_forget_with_several_outputs(exported):
    _, path = exported
    xa, ya = data(2, 6)
    xb, yb = data(3, 4)
    xq, _ = data(4, 5)
    reg = FewShotRegressor(path).fit(xa, ya, groups=0).partial_fit(xb, yb, groups=1)
    both = FewShotRegressor(path).fit(np.concatenate([xa, xb]), np.concatenate([ya, yb]), groups=[0] * 6 + [1] * 4)
    np.testing.assert_allclose(reg.predict(xq), both.predict(xq), rtol=1e-5, atol=1e-5)
    reg.forget(1)
    np.testing.assert_allclose(reg.predict(xq), FewShotRegressor(path).fit(xa, ya, groups=0).predict(xq),
                               rtol=1e-5, atol=1e-5)


def test_csv_rows_hold_inputs_then_outputs(exported, tmp_path):
    _, path = exported
    x, y = data(5, 6)
    rows = np.concatenate([x, y], 1)
    (tmp_path / "s.csv").write_text("a,b,c,u,v\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    (tmp_path / "q.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in x[:2]))
    state = tmp_path / "s.state"
    r = CliRunner().invoke(app, ["adapt", str(path), "--csv", str(tmp_path / "s.csv"), "--state", str(state)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["predict", str(path), "--csv", str(tmp_path / "q.csv"), "--state", str(state)])
    out = [json.loads(line) for line in r.output.splitlines()]
    want = FewShotRegressor(path).fit(x, y).predict(x[:2])
    np.testing.assert_allclose([o["prediction"] for o in out], want, rtol=1e-5, atol=1e-5)
    r = CliRunner().invoke(app, ["adapt", str(path), "--csv", str(tmp_path / "q.csv"), "--state", str(state)])
    assert r.exit_code == 2 and "has 3 fields; expected 5" in r.output
