"""A recurrent meta-learner: a GRU reads each labelled sample into its class's fixed-size memory,
and a learned readout writes that class's linear head from the memory.

Per class ``c`` the memory starts from a learned ``h0 [H]`` and takes one GRU step per sample of
``c``, in the order the samples were given: ``h_c <- GRU(e_i, h_c)``. Classes never see each
other's samples, so a class's memory (and head row) depends on its own samples only: forgetting a
class is dropping its row. The readout is row-wise and gives a prototype-like vector ``p_c [D]``
and a bias ``beta_c = v . h_c``; the head is ``weight_c = 2 s p_c``, ``bias_c = -s ||p_c||^2 +
beta_c`` so that ``logits = x . weight^T + bias`` equals ``-s ||x - p_c||^2 + beta_c`` up to the
class-independent ``-s ||x||^2``.

Two memory layouts (``memory``):

- ``"gru"``: the memory is ``h_c`` alone (``[H]``) and ``p_c = W_o h_c + b_o``;
- ``"class_mean"``: the memory row is ``[h_c (H), mean_c (D), n_c (1)]``: besides the GRU state it
  carries the exact running mean of the class's embeddings and their count (updated in constant
  time, order-free), and ``p_c = mean_c + (W_o h_c + b_o) / n_c`` with ``W_o``, ``b_o`` and ``v``
  starting at zero: the rule starts as Prototypical Networks exactly and the GRU learns a
  correction, which fades as more samples back the mean.

One function, :meth:`Recurrent.update`, is trained (torch) and exported (``adapt.onnx`` from the
initial memory, ``update.onnx`` from a stored memory): the samples are scattered into a padded
``[K, C, D]`` sequence (``K`` = most samples of any class), one ``nn.GRU`` runs over it, and each
class takes the hidden state after its own last sample (the initial state when it has none).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgemeta.train.methods.base import HeadMethod
from edgemeta.train.methods.linear_head import linear_logits


MEMORY_LAYOUTS = ("gru", "class_mean")


class Recurrent(HeadMethod):
    """Class memory ``[C, W]`` -> head ``weight [C, D]``, ``bias [C]``.

    ``hidden``: GRU width ``H``. ``memory``: ``"gru"`` (``W = H``) or ``"class_mean"`` (``W = H + D +
    1``: the GRU state, the exact class mean and the sample count). ``random_shots``: in training,
    each class keeps a random ``1..shots`` of its support samples (so the update is trained at every
    shot count) and the order of the support is shuffled (so the learned update is near
    order-invariant); ``full_shot_episodes``: the fraction of training episodes that keep every
    support sample instead (only shuffled), so the backbone also trains at the episodes' full shot count.
    """

    name = "recurrent"
    param_names = ("weight", "bias")

    def __init__(self, dim: int, hidden: int = 128, init_scale: float = 1.0, random_shots: bool = True,
                 memory: str = "class_mean", full_shot_episodes: float = 0.0):
        super().__init__()
        if memory not in MEMORY_LAYOUTS:
            raise ValueError(f"memory must be one of {list(MEMORY_LAYOUTS)}, got {memory!r}")
        if not 0.0 <= full_shot_episodes <= 1.0:
            raise ValueError(f"full_shot_episodes must be a fraction in [0, 1], got {full_shot_episodes!r}")
        self.full_shot_episodes = float(full_shot_episodes)
        self.dim, self.hidden, self.random_shots = int(dim), int(hidden), bool(random_shots)
        self.memory = memory
        self.class_mean = memory == "class_mean"
        self.memory_width = self.hidden + (self.dim + 1 if self.class_mean else 0)
        self.gru = nn.GRU(self.dim, self.hidden)
        self.h0 = nn.Parameter(torch.zeros(self.hidden))
        self.readout = nn.Linear(self.hidden, self.dim)
        self.bias_readout = nn.Linear(self.hidden, 1, bias=False)
        nn.init.zeros_(self.bias_readout.weight)
        self.log_scale = nn.Parameter(torch.tensor(float(init_scale)).log())
        self._init_near_prototypes()

    @torch.no_grad()
    def _init_near_prototypes(self, gain: float = 0.25) -> None:
        """Start near Prototypical Networks. Both layouts: the GRU's candidate state carries ``gain * e``
        in its first ``min(D, H)`` units and ``h0 = 0``. ``"gru"``: the readout divides it back out, so a
        class's ``p`` begins as a recency-weighted mean of its embeddings (update gate 0.5).
        ``"class_mean"``: the readout starts at zero, so ``p`` begins as the exact class mean and the
        GRU's state (which carries the embeddings) is there for the readout to learn a correction from."""
        k = min(self.dim, self.hidden)
        w_ih = self.gru.weight_ih_l0                                        # [3H, D]: reset, update, candidate
        w_ih[2 * self.hidden:2 * self.hidden + k].zero_()
        w_ih[2 * self.hidden:2 * self.hidden + k, :k] += gain * torch.eye(k)
        self.readout.weight.zero_()
        if not self.class_mean:
            self.readout.weight[:k, :k] = torch.eye(k) / gain
        self.readout.bias.zero_()

    # ---------------------------------------------------------------- the rule
    def initial_memory(self, onehot: torch.Tensor) -> torch.Tensor:
        """The initial memory of every class column of ``onehot [S, C]`` -> ``[C, W]`` (C kept dynamic):
        ``h0``, then (``"class_mean"``) a zero mean and a zero count."""
        start = torch.ones_like(onehot.sum(0))[:, None] * self.h0[None, :]
        if self.class_mean:
            zeros = torch.zeros_like(onehot.sum(0))[:, None] * self.readout.bias.detach()[None, :]   # [C, D]
            start = torch.cat([start, zeros, zeros[:, :1]], 1)
        return start

    def update(self, memory: torch.Tensor, support: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """``memory [C, W]`` after reading ``support [S, D]`` (row ``i`` into class ``argmax onehot[i]``;
        an all-zero row is skipped) in row order -> ``[C, W]``. With ``"class_mean"`` the mean and count
        parts are updated exactly: ``mean <- (n mean + sum of new) / (n + new count)``."""
        if not self.class_mean:
            return self.gru_update(memory, support, onehot)
        h, mean, n = memory[:, :self.hidden], memory[:, self.hidden:-1], memory[:, -1:]
        new_n = n + onehot.sum(0)[:, None]                                  # [C, 1]
        sums = onehot.t() @ support                                         # [C, D]
        new_mean = (mean * n + sums) / torch.clamp(new_n, min=1.0)
        return torch.cat([self.gru_update(h, support, onehot), new_mean, new_n], 1)

    def gru_update(self, memory: torch.Tensor, support: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """GRU state ``memory [C, H]`` after one step per sample of each class, in row order -> ``[C, H]``."""
        counts = onehot.sum(0)                                              # [C] samples per class
        rank = ((torch.cumsum(onehot, 0) - 1.0) * onehot).sum(1)            # [S] position within its class
        k = torch.clamp(counts.max(), min=1.0).long()                       # longest sequence (>= 1 step)
        steps = torch.arange(k, device=support.device)                      # [K]
        n_classes = onehot.shape[1]
        # seq[t, c] = the t-th sample of class c, zeros after its last; skipped rows land in a spare last row
        slot = torch.where(onehot.sum(1) > 0, rank * n_classes + onehot.argmax(1).to(rank.dtype),
                           (k * n_classes).to(rank.dtype)).long()                                   # [S]
        zero_d = self.readout.bias.detach()[None, :] * 0.0                 # [1, D]: D is fixed, S may be 0
        zeros = (steps[:, None, None].to(support.dtype) * 0.0) * torch.zeros_like(memory[None, :, :1]) * zero_d
        flat = torch.cat([zeros.reshape(-1, self.dim), zero_d], 0)                                 # [K*C+1, D]
        seq = flat.index_put((slot,), support, accumulate=True)[:-1].reshape(zeros.shape)         # [K, C, D]
        states, _ = self.gru(seq, memory[None])                             # [K, C, H]
        states = torch.cat([memory[None], states], 0)                       # [K+1, C, H]; row 0 = before any
        pick = (torch.arange(k + 1, device=support.device)[:, None] == counts.long()[None, :]).to(support.dtype)
        return (pick[:, :, None] * states).sum(0)                           # [C, H]: state after its last

    def head(self, memory: torch.Tensor) -> dict[str, torch.Tensor]:
        """Row-wise readout of ``memory [C, W]`` -> ``weight [C, D]``, ``bias [C]``."""
        h = memory[:, :self.hidden]
        p = self.readout(h)
        if self.class_mean:                           # the mean, corrected less as more samples back it
            p = memory[:, self.hidden:-1] + p / torch.clamp(memory[:, -1:], min=1.0)
        s = self.log_scale.exp()
        return {"weight": 2.0 * s * p, "bias": -s * (p * p).sum(1) + self.bias_readout(h)[:, 0]}

    def adapt(self, support: torch.Tensor, onehot: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.update(self.initial_memory(onehot), support, onehot))

    def classify(self, embeddings: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return linear_logits(embeddings, params["weight"], params["bias"])

    # ---------------------------------------------------------------- meta-training
    def episode_logits(self, support: torch.Tensor, onehot: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        if self.training:
            support, onehot = self.training_support(support, onehot)
        return self.classify(query, self.adapt(support, onehot))

    def training_support(self, support: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shuffle the support's order and, with ``random_shots``, keep a random ``1..n_c`` samples of
        each class (the others' one-hot rows zeroed, so the update skips them), except in a
        ``full_shot_episodes`` fraction of episodes."""
        order = torch.randperm(len(support), device=support.device)
        support, onehot = support[order], onehot[order]
        full = self.full_shot_episodes > 0.0 and float(torch.rand(())) < self.full_shot_episodes
        if self.random_shots and not full:
            counts = onehot.sum(0)
            keep = torch.floor(torch.rand_like(counts) * counts) + 1.0      # [C] in 1..n_c
            rank = ((torch.cumsum(onehot, 0) - 1.0) * onehot).sum(1)        # [S]
            onehot = onehot * (rank[:, None] < keep[None, :]).to(onehot.dtype)
        return support, onehot

    def hparams(self) -> dict[str, Any]:
        p = "mean + (W_o h + b_o) / n" if self.class_mean else "W_o h + b_o"
        return {"memory": self.memory, "hidden": self.hidden, "memory_width": self.memory_width,
                "scale": float(self.log_scale.detach().exp()), "readout": f"weight = 2 s p, bias = -s |p|^2 + v.h, p = {p}"}
