"""The head's temperature at the start of a meta phase that follows supervised pre-training.

A pre-trained backbone's embeddings have squared distances in the hundreds or thousands, so a
``proto`` or ``metasgd`` head starting at scale 1 gives saturated logits (an episode loss far above
``log(ways)``), and Adam moves ``log_scale`` by about the learning rate per step: thousands of
steps before the softmax is usable, while the saturated loss pulls the backbone out of shape. So
the temperature is fitted first, by a one-dimensional search of the episode loss on a few training
episodes (no augmentation, BatchNorm's running statistics, no gradient): it changes one scalar,
never the backbone.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgemeta.train.model import FewShotModel

LOG_SCALE_GRID = np.linspace(-16.0, 6.0, 111)      # scale from 1.1e-7 to 403, steps of 0.2 in log


@torch.no_grad()
def fit_log_scale(model: FewShotModel, episodes: list[torch.Tensor], onehot: torch.Tensor, yq: torch.Tensor,
                  to_input: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float] | None:
    """Set ``model.method.log_scale`` to the grid value with the lowest mean cross-entropy over
    ``episodes`` (each ``[ways*(shots+queries), ...]`` stored rows, support first; ``onehot``
    ``[ways*shots, ways]``, ``yq`` ``[ways*queries]``). Returns ``(loss at the old scale, loss at the
    fitted one)``, or None for a rule without a ``log_scale`` (left unchanged)."""
    method = model.method
    if not isinstance(getattr(method, "log_scale", None), torch.nn.Parameter):
        return None
    was_training = model.training
    model.eval()
    n_s = onehot.shape[0]
    zs = [model.backbone(to_input(x)).float() for x in episodes]
    old = float(method.log_scale)

    def loss_at(log_scale: float) -> float:
        method.log_scale.fill_(log_scale)
        return float(np.mean([F.cross_entropy(method.episode_logits(z[:n_s], onehot, z[n_s:]), yq).item()
                              for z in zs]))

    before = loss_at(old)
    losses = [loss_at(float(v)) for v in LOG_SCALE_GRID]
    best = int(np.argmin(losses))
    method.log_scale.fill_(float(LOG_SCALE_GRID[best]))
    model.train(was_training)
    return before, losses[best]
