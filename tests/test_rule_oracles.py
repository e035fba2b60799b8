"""Every adaptation rule against an independent float64 numpy oracle written from its docstring/paper.

Each rule's torch module (``edgemeta.train.methods``) and its exported ``adapt.onnx`` / ``classify.onnx``
graphs (run through onnxruntime, as on the device) must reproduce the oracle on random embeddings with
uneven shots and unsorted labels. ``ce_gradients`` is checked against torch autograd.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgemeta.train.export import graphs_from_model
from edgemeta.train.methods.linear_head import ce_gradients
from edgemeta.train.model import FewShotModel

D = 64  # the mlp backbone's embedding size is irrelevant here: only the head graphs are run


def softmax64(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def class_means64(x: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    return np.stack([x[y == k].mean(0) for k in range(c)])


def sgd64(x: np.ndarray, y1h: np.ndarray, w: np.ndarray, b: np.ndarray, lr_w: np.ndarray,
          lr_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient steps on the mean support cross-entropy of ``softmax(x W^T + b)``; the gradient is
    ``(P - Y)^T x / S`` for ``W`` and ``sum(P - Y) / S`` for ``b``. ``lr_w``: ``[T]`` or ``[T, D]``."""
    for t in range(len(lr_w)):
        g = (softmax64(x @ w.T + b) - y1h) / len(x)
        w = w - np.asarray(lr_w[t]) * (g.T @ x)
        b = b - lr_b[t] * g.sum(0)
    return w, b


def oracle(method, x: np.ndarray, y: np.ndarray, c: int, q: np.ndarray) -> np.ndarray:
    """float64 logits ``[Q, C]`` of ``method`` (its learned scalars read from the module) adapted on
    support ``x [S, D]`` with labels ``y [S]`` and applied to queries ``q``."""
    x, q = x.astype(np.float64), q.astype(np.float64)
    y1h = np.eye(c)[y]
    name = method.name
    if name == "proto":                        # Snell et al. 2017: -s * squared distance to class means
        s = float(method.log_scale.detach().exp())
        p = class_means64(x, y, c)
        return -s * ((q[:, None, :] - p[None]) ** 2).sum(-1)
    if name == "metasgd":                      # Proto-MAML init (W = 2sp, b = -s|p|^2) + Meta-SGD steps
        s = float(method.log_scale.detach().exp())
        p = class_means64(x, y, c)
        w, b = sgd64(x, y1h, 2 * s * p, -s * (p * p).sum(1), method.lr_weight.detach().double().numpy(),
                     method.lr_bias.detach().double().numpy())
        return q @ w.T + b
    if name == "ridge":                        # R2-D2 dual: W = Z^T (Z Z^T + lambda I)^-1 Y, Z = x / sqrt(D)
        lam, alpha, beta = (float(v.detach()) for v in (method.lam(), method.log_alpha.exp(), method.beta))
        z = x / np.sqrt(x.shape[1])
        w = z.T @ np.linalg.solve(z @ z.T + lam * np.eye(len(z)), y1h)          # [D, C]
        return alpha * (q / np.sqrt(x.shape[1])) @ w + beta
    if name == "finetune":                     # zero init, plain SGD on scaled L2-normalised features
        f = lambda v: method.feature_scale * v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-6)  # noqa: E731
        lrs = np.full(method.steps, method.lr)
        w, b = sgd64(f(x), y1h, np.zeros((c, x.shape[1])), np.zeros(c), lrs, lrs)
        return f(q) @ w.T + b
    raise AssertionError(f"no oracle for {name}")


KWARGS = {"proto": {"init_scale": 0.37}, "metasgd": {"init_scale": 0.01, "steps": 3},
          "ridge": {"init_lambda": 0.5, "init_alpha": 7.0}, "finetune": {"steps": 20, "lr": 0.5}}


@pytest.fixture(scope="module", params=sorted(KWARGS))
def rule(request):
    """(method module, adapt session, classify session) with learned values off their initial ones."""
    torch.manual_seed(11)
    model = FewShotModel("mlp", request.param, (28, 28), method_kwargs=KWARGS[request.param]).eval()
    with torch.no_grad():
        for p in model.method.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if request.param == "metasgd":         # per-dimension step sizes far apart, so a scalar one fails
            model.method.lr_weight.uniform_(0.0, 2.0)
    graphs = graphs_from_model(model, (1, 28, 28))
    sess = {k: ort.InferenceSession(graphs[k], providers=["CPUExecutionProvider"]) for k in ("adapt.onnx", "classify.onnx")}
    return model.method, sess["adapt.onnx"], sess["classify.onnx"], model.embedding_dim


def _episodes(dim: int):
    """(support, labels, C, query): uneven shots, every class present, labels unsorted, float32."""
    rng = np.random.default_rng(5)
    for c, max_shots in ((2, 1), (3, 4), (5, 5), (7, 3), (20, 2)):
        y = rng.permutation(np.repeat(np.arange(c), rng.integers(1, max_shots + 1, c)))
        centres = rng.standard_normal((c, dim))
        x = (centres[y] + 0.7 * rng.standard_normal((len(y), dim))).astype(np.float32)
        q = (centres[rng.integers(0, c, 11)] + 0.7 * rng.standard_normal((11, dim))).astype(np.float32)
        yield x, y, c, q


def test_rule_matches_float64_oracle_in_torch_and_onnx(rule):
    method, adapt, classify, dim = rule
    for x, y, c, q in _episodes(dim):
        want = oracle(method, x, y, c, q)
        onehot = np.eye(c, dtype=np.float32)[y]
        with torch.no_grad():
            params = method.adapt(torch.from_numpy(x), torch.from_numpy(onehot))
            got_torch = method.classify(torch.from_numpy(q), params).numpy()
        outs = adapt.run(None, {"support_embeddings": x, "support_labels_onehot": onehot})
        names = [o.name for o in adapt.get_outputs()]
        got_onnx = classify.run(["logits"], {"embeddings": q, **dict(zip(names, outs))})[0]
        scale = np.abs(want).max()
        for got, where in ((got_torch, "torch"), (got_onnx, "onnx")):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4 * scale, err_msg=f"{method.name} {where} {c}-way")
            top2 = np.sort(want, 1)[:, -2:]
            clear = top2[:, 1] - top2[:, 0] > 1e-3 * scale
            np.testing.assert_array_equal(got.argmax(1)[clear], want.argmax(1)[clear])


def test_ridge_newton_schulz_matches_linalg_solve():
    """The Newton-Schulz inverse in the exported ridge head against numpy.linalg.solve in float64,
    down to the smallest lambda the rule allows and for a support set larger than D."""
    from edgemeta.train.methods.ridge import MIN_LAMBDA, newton_schulz_inverse

    rng = np.random.default_rng(0)
    for s, d, lam in ((5, 64, MIN_LAMBDA), (25, 64, 1.0), (100, 64, MIN_LAMBDA), (40, 576, 0.3)):
        z = rng.standard_normal((s, d)) * rng.uniform(0.2, 3.0) / np.sqrt(d)
        k = z @ z.T + lam * np.eye(s)
        y = np.eye(5)[rng.integers(0, 5, s)]
        want = np.linalg.solve(k, y)
        inv = newton_schulz_inverse(torch.from_numpy(k.astype(np.float32)), 40).double().numpy()
        np.testing.assert_allclose(inv @ y, want, rtol=1e-3, atol=1e-3 * np.abs(want).max(), err_msg=f"S={s} D={d}")


def test_ce_gradients_equal_autograd():
    rng = np.random.default_rng(1)
    for s, c, d in ((4, 2, 3), (25, 5, 16), (60, 20, 32)):
        x = torch.from_numpy(rng.standard_normal((s, d)))
        y = torch.from_numpy(rng.integers(0, c, s))
        w = torch.from_numpy(rng.standard_normal((c, d))).requires_grad_()
        b = torch.from_numpy(rng.standard_normal(c)).requires_grad_()
        loss = torch.nn.functional.cross_entropy(x @ w.t() + b, y)          # mean over the support set
        gw_auto, gb_auto = torch.autograd.grad(loss, (w, b))
        gw, gb = ce_gradients(x, torch.nn.functional.one_hot(y, c).double(), w.detach(), b.detach())
        torch.testing.assert_close(gw, gw_auto, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gb, gb_auto, rtol=1e-10, atol=1e-12)
