"""R2-D2 (Bertinetto et al. 2019): closed-form ridge regression head, solved in the S x S dual.

ONNX has no matrix inverse in its default domain, so the dual system is solved by Newton-Schulz
iteration, ``X <- X (2I - K X)`` from ``X0 = I / trace(K)``, which converges for any symmetric
positive-definite ``K``: the residual ``I - K X_k`` has spectral radius ``(1 - lambda / trace(K))^(2^k)``,
so 40 iterations reach float32 precision unless ``trace(K) / lambda`` exceeds ~1e10 (``K = Z Z^T + lambda I``
with ``Z = x / sqrt(D)`` and ``lambda >= 0.05``). Tests check it against a float64 ``numpy.linalg.solve`` oracle.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgemeta.train.methods.base import HeadMethod
from edgemeta.train.methods.linear_head import linear_logits

MIN_LAMBDA = 0.05


def eye_like_rows(x: torch.Tensor) -> torch.Tensor:
    """Identity ``[S, S]`` with ``S = x.shape[0]`` kept dynamic in the exported graph."""
    ones = torch.ones_like(x[:, :1])                       # [S, 1]
    idx = torch.cumsum(ones, 0)                            # 1..S as a column
    return (idx == idx.t()).to(x.dtype)


def newton_schulz_inverse(k: torch.Tensor, iterations: int) -> torch.Tensor:
    """Inverse of a symmetric positive-definite ``k [S, S]``."""
    eye = eye_like_rows(k)
    inv = eye / (k * eye).sum()
    for _ in range(iterations):
        inv = inv @ (2.0 * eye - k @ inv)
    return inv


class Ridge(HeadMethod):
    """``W = Z^T (Z Z^T + lambda I)^-1 Y`` on ``Z = x / sqrt(D)``; logits ``alpha * (Z W) + beta``.

    ``lambda``, ``alpha`` and ``beta`` are meta-learned. Outputs ``weight [C, D]`` (already scaled
    by ``alpha / sqrt(D)``) and ``bias [C]``.
    """

    name = "ridge"
    param_names = ("weight", "bias")

    def __init__(self, dim: int, init_lambda: float = 1.0, init_alpha: float = 10.0, iterations: int = 40):
        super().__init__()
        self.dim, self.iterations = int(dim), int(iterations)
        self.log_lambda = nn.Parameter(torch.tensor(float(init_lambda)).log())
        self.log_alpha = nn.Parameter(torch.tensor(float(init_alpha)).log())
        self.beta = nn.Parameter(torch.tensor(0.0))

    def lam(self) -> torch.Tensor:
        return self.log_lambda.exp() + MIN_LAMBDA

    def adapt(self, support: torch.Tensor, onehot: torch.Tensor) -> dict[str, torch.Tensor]:
        z = support / self.dim ** 0.5
        k = z @ z.t() + self.lam() * eye_like_rows(z)
        w = (z.t() @ (newton_schulz_inverse(k, self.iterations) @ onehot)).t()     # [C, D]
        weight = self.log_alpha.exp() * w / self.dim ** 0.5
        bias = self.beta * torch.ones_like(onehot[0])
        return {"weight": weight, "bias": bias}

    def classify(self, embeddings: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return linear_logits(embeddings, params["weight"], params["bias"])

    def hparams(self) -> dict[str, Any]:
        return {"solver": f"newton-schulz x{self.iterations}", "lambda": float(self.lam().detach()),
                "alpha": float(self.log_alpha.detach().exp()), "beta": float(self.beta.detach()),
                "feature_scale": f"1/sqrt({self.dim})"}
