"""Regression rules: a linear head over features ``phi [.., S, P]`` adapted from the support set's
sufficient statistics ``gram = sum phi phi^T [.., P, P]`` and ``targets = sum phi y^T [.., P, O]``.

Both rules see the support set only through these two sums (``gram[-1, -1]`` is the sample count,
the features ending in a constant 1), so adding samples adds statistics and dropping a group of
samples removes its statistics: incremental learning and forgetting are exact. Leading batch
dimensions (tasks) broadcast; the exported graphs take one task.

- ``alpaca`` (Harrison et al. 2018, ALPaCA): Bayesian linear regression with a matrix-normal prior
  ``K ~ MN(K0, Lambda0^-1, diag(noise))``, meta-learned ``K0 [P, O]``, ``Lambda0 = L L^T + eps I`` and
  ``noise [O]``. Posterior ``Lambda = gram + Lambda0``, ``K = Lambda^-1 (targets + Lambda0 K0)``;
  predictive ``y ~ N(phi K, noise * (1 + phi Lambda^-1 phi^T))``. Head: ``weight = K``,
  ``covariance = Lambda^-1``, ``noise_variance``.
- ``metasgd`` (Li et al. 2017) with a squared-error inner loop: from a meta-learned ``weight0 [P, O]``,
  ``steps`` gradient steps ``W <- W - lr_t * dL/dW`` on the mean squared support error
  ``L = sum ||phi W - y||^2 / S``, ``dL/dW = 2 (gram W - targets) / S``, with per-parameter step sizes
  ``lr [T, P, O]``. Head: ``weight``. It gives no uncertainty.

ONNX has no matrix inverse in its default domain: in the exported graph ``Lambda^-1`` is computed by Newton-Schulz
iteration in float64 inside the graph (``X <- X (2I - Lambda X)`` from ``X0 = I / trace(Lambda)``);
the residual's spectral radius is ``(1 - lambda_min / trace)^(2^k)``, so ``ITERATIONS`` = 48 reach
float64 precision while ``trace(Lambda) / lambda_min(Lambda)`` stays below ~1e12 (``lambda_min >=
PRIOR_EPS``). Meta-training solves the same system by Cholesky factorisation (``solver="cholesky"``,
about 20 times faster with its backward pass); export switches to ``"newton-schulz"`` and its parity
gate holds the graph equal to the Cholesky answer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ITERATIONS = 48
PRIOR_EPS = 1e-3           # Lambda0 = L L^T + PRIOR_EPS * I
NOISE_FLOOR = 1e-5         # noise variance = exp(log_noise) + NOISE_FLOOR
SOLVERS = ("cholesky", "newton-schulz")
HEAD_OUTPUTS = {"alpaca": ("weight", "covariance", "noise_variance"), "metasgd": ("weight",)}


def newton_schulz_inverse64(a: torch.Tensor, iterations: int = ITERATIONS) -> torch.Tensor:
    """Inverse of symmetric positive-definite ``a [.., P, P]`` (float64 in, float64 out)."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    trace = (a * eye).sum((-2, -1), keepdim=True)
    inv = eye / trace
    for _ in range(iterations):
        inv = inv @ (2.0 * eye - a @ inv)
    return inv


class RegressionRule(nn.Module):
    """``adapt(gram [.., P, P], targets [.., P, O]) -> {name: tensor}``; ``predict(phi [.., N, P], params)
    -> (mean [.., N, O], variance [.., N, O] or None)``."""

    name = ""
    param_names: tuple[str, ...] = ()
    gives_variance = False

    def adapt(self, gram: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, phi: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        return {}


class Alpaca(RegressionRule):
    """Closed-form Bayesian linear head (module docstring); ``dim`` = P, ``outputs`` = O."""

    name = "alpaca"
    param_names = HEAD_OUTPUTS["alpaca"]
    gives_variance = True

    def __init__(self, dim: int, outputs: int = 1, init_precision: float = 1.0, init_noise: float = 0.1,
                 solver: str = "cholesky"):
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.dim, self.outputs, self.solver = int(dim), int(outputs), solver
        self.prior_mean = nn.Parameter(torch.zeros(self.dim, self.outputs))
        self.prior_factor = nn.Parameter(torch.eye(self.dim) * float(init_precision) ** 0.5)
        self.log_noise = nn.Parameter(torch.full((self.outputs,), float(init_noise)).log())

    def prior_precision(self) -> torch.Tensor:
        """``Lambda0 = L L^T + eps I`` ``[P, P]`` (float64)."""
        f = self.prior_factor.double()
        return f @ f.t() + PRIOR_EPS * torch.eye(self.dim, dtype=torch.float64)

    def noise_variance(self) -> torch.Tensor:
        return self.log_noise.exp() + NOISE_FLOOR

    def adapt(self, gram: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        lam0 = self.prior_precision()
        lam = gram.double() + lam0
        cov = (newton_schulz_inverse64(lam) if self.solver == "newton-schulz"
               else torch.cholesky_inverse(torch.linalg.cholesky(lam)))
        weight = cov @ (targets.double() + lam0 @ self.prior_mean.double())
        noise = self.noise_variance() * torch.ones_like(targets[..., :1, :]).squeeze(-2).float()
        return {"weight": weight.float(), "covariance": cov.float(), "noise_variance": noise}

    def predict(self, phi: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mean = phi @ params["weight"]
        spread = ((phi @ params["covariance"]) * phi).sum(-1, keepdim=True)       # [.., N, 1]
        return mean, (1.0 + spread) * params["noise_variance"].unsqueeze(-2)

    def hparams(self) -> dict[str, Any]:
        lam0 = self.prior_precision().detach()
        eig = torch.linalg.eigvalsh(lam0)
        return {"prior": "matrix-normal", "solver": f"newton-schulz x{ITERATIONS} (float64) in adapt.onnx",
                "noise_variance": [float(v) for v in self.noise_variance().detach()],
                "prior_precision_eigen_range": [float(eig.min()), float(eig.max())]}


class MetaSGDRegression(RegressionRule):
    """Squared-error Meta-SGD on the linear head (module docstring); ``dim`` = P, ``outputs`` = O."""

    name = "metasgd"
    param_names = HEAD_OUTPUTS["metasgd"]

    def __init__(self, dim: int, outputs: int = 1, steps: int = 5, init_lr: float = 1e-3):
        super().__init__()
        self.dim, self.outputs, self.steps = int(dim), int(outputs), int(steps)
        self.weight0 = nn.Parameter(torch.zeros(self.dim, self.outputs))
        self.lr = nn.Parameter(torch.full((self.steps, self.dim, self.outputs), float(init_lr)))

    def adapt(self, gram: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        count = gram[..., -1:, -1:]                                   # [.., 1, 1]: the sample count
        weight = self.weight0.to(gram.dtype) + torch.zeros_like(targets)
        for t in range(self.steps):
            weight = weight - self.lr[t].to(gram.dtype) * (2.0 * (gram @ weight - targets) / count)
        return {"weight": weight.float()}

    def predict(self, phi: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        return phi @ params["weight"], None

    def hparams(self) -> dict[str, Any]:
        lr = self.lr.detach()
        return {"init": "meta-learned weight0", "steps": self.steps, "loss": "mean squared error",
                "lr_mean_per_step": [float(v) for v in lr.mean((1, 2))]}


def make_rule(method: str, dim: int, outputs: int = 1, **kwargs: Any) -> RegressionRule:
    """The rule named ``method`` (``alpaca`` or ``metasgd``) for ``dim``-wide features and ``outputs`` targets."""
    rules = {"alpaca": Alpaca, "metasgd": MetaSGDRegression}
    if method not in rules:
        raise ValueError(f"regression method must be one of {sorted(rules)}, got {method!r}")
    return rules[method](dim, outputs, **kwargs)


def statistics(phi: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``phi [.., S, P]``, ``y [.., S, O]`` -> ``gram [.., P, P]``, ``targets [.., P, O]``."""
    pt = phi.transpose(-2, -1)
    return pt @ phi, pt @ y
