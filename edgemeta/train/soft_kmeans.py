"""Masked soft k-means (Ren et al. 2018): unlabelled embeddings refine the prototypes of a few labels.

One refinement step (``steps`` of them) on support ``[S, D]`` with one-hot labels ``[S, C]`` and
unlabelled embeddings ``[U, D]``:

- ``p_c`` = mean of class ``c``'s support (the proto head's ``adapt``);
- ``d_jc = ||u_j - p_c||^2`` (the proto head's expansion, clamped at 0), ``z_jc = softmax_c(-s d_jc)``
  with ``s`` the head's own scale (``manifest.head.scale``);
- the distractor mask ``m_jc = sigmoid(gamma (beta - d_jc / mean_j d_jc))``: a soft threshold on the
  distance to prototype ``c`` relative to the mean distance of all unlabelled samples to it (Ren's
  normalisation, which makes one threshold serve any embedding scale, shot count and pool size);
- ``p'_c = (sum_i onehot_ic x_i + sum_j z_jc m_jc u_j) / (count_c + sum_j z_jc m_jc)``.

``beta`` and ``gamma`` (two scalars; Ren et al. predict them per class with a small MLP on distance
statistics) are fitted by gradient with :func:`fit_mask` on episodes of held-out validation classes
with distractors: the training classes' embeddings are packed tighter by the backbone than new classes'
are, so a threshold fitted there would be miscalibrated on the user's classes. With ``U = 0`` the
result is exactly the class means.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgemeta.semisupervised_eval import sample_semi_episode

EPS = 1e-8          # keeps d / mean(d) finite when every unlabelled sample sits on a prototype


class MaskedSoftKMeans(nn.Module):
    """``forward(support [S, D], onehot [S, C], unlabeled [U, D]) -> prototypes [C, D]``."""

    def __init__(self, scale: float, steps: int = 1, beta: float = 1.0, gamma: float = 10.0):
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps = int(steps)
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.beta = nn.Parameter(torch.tensor(float(beta)))
        self.log_gamma = nn.Parameter(torch.tensor(math.log(gamma)))

    def forward(self, support: torch.Tensor, onehot: torch.Tensor, unlabeled: torch.Tensor) -> torch.Tensor:
        sums = onehot.t() @ support                                   # [C, D]
        counts = onehot.sum(0)                                        # [C]
        protos = sums / counts[:, None]
        uu = (unlabeled * unlabeled).sum(1, keepdim=True)             # [U, 1]
        for _ in range(self.steps):
            d = (uu - 2.0 * unlabeled @ protos.t() + (protos * protos).sum(1)[None, :]).clamp_min(0.0)   # [U, C]
            z = torch.softmax(-self.scale * d, dim=1)
            rel = d / (d.mean(0, keepdim=True) + EPS)
            w = z * torch.sigmoid(self.log_gamma.exp() * (self.beta - rel))                              # [U, C]
            protos = (sums + w.t() @ unlabeled) / (counts + w.sum(0))[:, None]
        return protos

    def settings(self) -> dict[str, float | int | str]:
        """The fitted scalars, as the manifest's ``refine.distractor`` records them."""
        return {"mask": "sigmoid(gamma * (beta - d / mean_j d))", "beta": float(self.beta.detach()),
                "gamma": float(self.log_gamma.detach().exp()), "assignment_scale": float(self.scale)}


def fit_mask(module: MaskedSoftKMeans, embeddings: np.ndarray, offsets: np.ndarray, counts: np.ndarray,
             steps: int = 300, lr: float = 0.05, seed: int = 0,
             settings: tuple[tuple[int, int, int, int], ...] = ((5, 1, 5, 0), (5, 1, 5, 5), (20, 1, 5, 0),
                                                                 (20, 1, 5, 20), (5, 5, 10, 5), (20, 1, 14, 20)),
             queries: int = 5, log: Callable[[str], None] = lambda s: None) -> dict[str, float]:
    """Fit ``beta`` and ``gamma`` by Adam on the query cross-entropy (logits ``-s ||q - p'||^2``) of
    episodes of ``embeddings [n, D]`` (classes at ``offsets``/``counts``), cycling through
    ``settings`` = (ways, shots, M unlabelled per class, D distractor classes). Returns the final loss."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(np.ascontiguousarray(embeddings, np.float32))
    opt = torch.optim.Adam([module.beta, module.log_gamma], lr=lr)
    losses: list[float] = []
    for step in range(steps):
        ways, shots, m, dis = settings[step % len(settings)]
        ep = sample_semi_episode(rng, offsets, counts, ways, shots, queries, m, dis)
        onehot = torch.nn.functional.one_hot(torch.arange(ways).repeat_interleave(shots), ways).float()
        protos = module(x[ep.support], onehot, x[ep.unlabeled])
        q = x[ep.query]
        d = (q * q).sum(1, keepdim=True) - 2.0 * q @ protos.t() + (protos * protos).sum(1)[None, :]
        loss = nn.functional.cross_entropy(-module.scale * d, torch.arange(ways).repeat_interleave(queries))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            log(f"mask fit step {step + 1}: loss {np.mean(losses[-100:]):.4f}, beta {float(module.beta.detach()):.3f}, "
                f"gamma {float(module.log_gamma.detach().exp()):.2f}")
    return {"final_loss": float(np.mean(losses[-50:])), "steps": steps, "lr": lr}
