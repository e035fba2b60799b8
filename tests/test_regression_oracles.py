"""The regression rules against float64 numpy oracles written from the papers, in torch and as exported
ONNX graphs run through onnxruntime; the graphs' Newton-Schulz inverse against numpy's solve.

ALPaCA (Harrison et al. 2018): posterior precision ``Lambda = Phi^T Phi + Lambda0``, mean
``K = Lambda^-1 (Phi^T Y + Lambda0 K0)``, predictive variance ``noise (1 + phi Lambda^-1 phi^T)``.
Meta-SGD (Li et al. 2017) with a squared-error inner loop: ``W <- W - lr_t * grad`` of
``sum ||Phi W - Y||^2 / S``.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from edgemeta.train.regression.export import regression_graphs  # noqa: E402
from edgemeta.train.regression.features import VectorFeatures  # noqa: E402
from edgemeta.train.regression.meta_train import RegressionModel  # noqa: E402
from edgemeta.train.regression.rules import (  # noqa: E402
    make_rule,
    newton_schulz_inverse64,
    statistics,
)

D, O = 3, 2


def _model(method: str, seed: int = 0) -> RegressionModel:
    torch.manual_seed(seed)
    feats = VectorFeatures(D, (16, 8), mean=[0.5, -1.0, 2.0], std=[2.0, 0.5, 3.0])
    rule = make_rule(method, feats.dim, O)
    with torch.no_grad():                       # move the meta-learned values away from their initial ones
        for p in rule.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if method == "metasgd":
            rule.lr.abs_().mul_(0.2)
    return RegressionModel(feats, rule).eval()


def features64(model: RegressionModel, x: np.ndarray) -> np.ndarray:
    """The MLP in float64: normalise, ReLU layers, then a column of ones."""
    f = model.features
    h = (x.astype(np.float64) - f.mean.double().numpy()) / f.std.double().numpy()
    for layer in f.net:
        if isinstance(layer, torch.nn.Linear):
            h = h @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()
        else:
            h = np.maximum(h, 0.0)
    return np.concatenate([h, np.ones((len(h), 1))], 1)


def oracle(model: RegressionModel, xs: np.ndarray, ys: np.ndarray, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 predictions (and variances) of the model's rule adapted on ``(xs, ys)``, at ``xq``."""
    rule = model.rule
    phi, q = features64(model, xs), features64(model, xq)
    y = ys.astype(np.float64)
    if rule.name == "alpaca":
        L = rule.prior_factor.detach().double().numpy()
        lam0 = L @ L.T + 1e-3 * np.eye(len(L))
        k0 = rule.prior_mean.detach().double().numpy()
        lam = phi.T @ phi + lam0
        k = np.linalg.solve(lam, phi.T @ y + lam0 @ k0)
        noise = np.exp(rule.log_noise.detach().double().numpy()) + 1e-5
        spread = np.einsum("np,pq,nq->n", q, np.linalg.inv(lam), q)
        return q @ k, (1.0 + spread)[:, None] * noise[None]
    w = rule.weight0.detach().double().numpy().copy()
    lr = rule.lr.detach().double().numpy()
    for t in range(len(lr)):
        w = w - lr[t] * (2.0 * phi.T @ (phi @ w - y) / len(phi))
    return q @ w, None


def _task(seed: int, s: int, n: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(s, D)).astype(np.float32), rng.normal(size=(s, O)).astype(np.float32),
            rng.normal(size=(n, D)).astype(np.float32))


def _onnx(model: RegressionModel, xs: np.ndarray, ys: np.ndarray, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    graphs = {k: ort.InferenceSession(v, providers=["CPUExecutionProvider"]) for k, v in regression_graphs(model).items()}
    phi = graphs["backbone.onnx"].run(None, {"inputs": xs})[0].astype(np.float64)
    params = graphs["adapt.onnx"].run(None, {"feature_gram": phi.T @ phi, "feature_targets": phi.T @ ys.astype(np.float64)})
    names = list(model.rule.param_names)
    q = graphs["backbone.onnx"].run(None, {"inputs": xq})[0]
    out = graphs["predict.onnx"].run(None, {"embeddings": q, **dict(zip(names, params))})
    return out[0], (out[1] if len(out) > 1 else None)


@pytest.mark.parametrize("method", ["alpaca", "metasgd"])
@pytest.mark.parametrize("shots", [1, 4, 30])
def test_torch_rule_equals_float64_oracle(method, shots):
    model = _model(method)
    xs, ys, xq = _task(shots, shots)
    with torch.no_grad():
        mean, var = model.episode(*(torch.from_numpy(a) for a in (xs, ys, xq)))
    want, want_var = oracle(model, xs, ys, xq)
    np.testing.assert_allclose(mean.numpy(), want, rtol=1e-4, atol=1e-4)
    if want_var is not None:
        np.testing.assert_allclose(var.numpy(), want_var, rtol=1e-4, atol=1e-6)
    else:
        assert var is None


@pytest.mark.parametrize("method", ["alpaca", "metasgd"])
@pytest.mark.parametrize("shots", [1, 5, 20])
def test_exported_graphs_equal_float64_oracle(method, shots):
    """backbone.onnx + adapt.onnx (float64 sums in; Newton-Schulz inverse) + predict.onnx, as on a device."""
    model = _model(method, seed=1)
    xs, ys, xq = _task(100 + shots, shots)
    mean, var = _onnx(model, xs, ys, xq)
    want, want_var = oracle(model, xs, ys, xq)
    np.testing.assert_allclose(mean, want, rtol=1e-4, atol=1e-4)
    if want_var is not None:
        np.testing.assert_allclose(var, want_var, rtol=1e-4, atol=1e-6)
    else:
        assert var is None


def test_alpaca_posterior_shrinks_with_data_and_matches_prior_without():
    """No samples: the prediction is the prior mean K0 and the variance noise * (1 + phi Lambda0^-1 phi^T);
    more samples at the same point shrink the predictive variance towards the noise."""
    model = _model("alpaca", seed=2)
    xq = np.zeros((1, D), np.float32)
    phi = features64(model, xq)
    k0 = model.rule.prior_mean.detach().double().numpy()
    gram = torch.zeros(phi.shape[1], phi.shape[1], dtype=torch.float64)
    params = model.rule.adapt(gram, torch.zeros(phi.shape[1], O, dtype=torch.float64))
    mean, var = model.rule.predict(torch.from_numpy(phi).float(), params)
    np.testing.assert_allclose(mean.detach().numpy(), phi @ k0, rtol=1e-4, atol=1e-5)
    variances = []
    for n in (1, 10, 100):
        xs = np.repeat(xq, n, 0)
        _, v = oracle(model, xs, np.ones((n, O), np.float32), xq)
        variances.append(v[0, 0])
    noise = float(np.exp(model.rule.log_noise.detach().numpy()[0]) + 1e-5)
    assert variances[0] > variances[1] > variances[2] > noise


def test_newton_schulz_inverse_reaches_float64_solve_on_ill_conditioned_matrices():
    rng = np.random.default_rng(0)
    for cond in (1e2, 1e6, 1e10):
        q, _ = np.linalg.qr(rng.normal(size=(41, 41)))
        a = (q * np.geomspace(1.0, 1.0 / cond, 41)) @ q.T * 1e3
        inv = newton_schulz_inverse64(torch.from_numpy(a)).numpy()
        want = np.linalg.inv(a)
        err = np.abs(inv - want).max() / np.abs(want).max()
        assert err < 1e-6, (cond, err)          # measured: 6e-12, 6e-10 and 6e-8


def test_statistics_are_sums_so_splitting_a_support_set_adds_them():
    phi, y = torch.randn(10, 5, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    g, t = statistics(phi, y)
    g1, t1 = statistics(phi[:4], y[:4])
    g2, t2 = statistics(phi[4:], y[4:])
    torch.testing.assert_close(g, g1 + g2)
    torch.testing.assert_close(t, t1 + t2)
