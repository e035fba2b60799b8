"""Gradient steps on a linear softmax head, written out explicitly (no autograd).

Explicit gradients make the inner loop exportable to plain ONNX (MatMul, Softmax, Sub) and, under
torch autograd, differentiable for meta-training: second order through the head only (ANIL).
"""

from __future__ import annotations

import torch


def class_means(support: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Prototypes ``[C, D]``: the mean support embedding ``[S, D]`` of each one-hot class ``[S, C]``."""
    counts = onehot.sum(0).clamp_min(1.0)
    return (onehot.t() @ support) / counts[:, None]


def linear_logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x [N, D]``, ``weight [C, D]``, ``bias [C]`` -> logits ``[N, C]``."""
    return x @ weight.t() + bias


def ce_gradients(x: torch.Tensor, onehot: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the mean support cross-entropy w.r.t. ``weight [C, D]`` and ``bias [C]``."""
    g = (torch.softmax(linear_logits(x, weight, bias), dim=1) - onehot) / onehot.sum()   # [S, C]
    return g.t() @ x, g.sum(0)


def sgd_steps(x: torch.Tensor, onehot: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              lr_weight: torch.Tensor, lr_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``T = len(lr_weight)`` steps. ``lr_weight``: ``[T]`` (scalar per step) or ``[T, D]``
    (per embedding dimension, Meta-SGD); ``lr_bias``: ``[T]``."""
    for t in range(lr_weight.shape[0]):
        gw, gb = ce_gradients(x, onehot, weight, bias)
        weight = weight - lr_weight[t] * gw
        bias = bias - lr_bias[t] * gb
    return weight, bias
