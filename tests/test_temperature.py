"""The head temperature fitted when a meta phase starts on a pre-trained backbone."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from edgemeta.train.model import FewShotModel
from edgemeta.train.temperature import fit_log_scale
from edgemeta.train.trainer import TrainConfig, head_never_meta_trained

WAYS, SHOTS, QUERIES = 5, 2, 3


def _episodes(n: int, seed: int) -> list[torch.Tensor]:
    """``n`` episodes of ``[WAYS*(SHOTS+QUERIES), 1, 28, 28]`` bright class-coloured squares (support first)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        base = torch.rand(WAYS, 1, 28, 28, generator=g) * 40.0          # far apart: large squared distances
        sup = base.repeat_interleave(SHOTS, 0) + torch.randn(WAYS * SHOTS, 1, 28, 28, generator=g)
        qry = base.repeat_interleave(QUERIES, 0) + torch.randn(WAYS * QUERIES, 1, 28, 28, generator=g)
        out.append(torch.cat([sup, qry]))
    return out


def _mean_loss(model: FewShotModel, episodes: list[torch.Tensor], onehot: torch.Tensor, yq: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return sum(F.cross_entropy(model.episode_logits(x, WAYS, SHOTS), yq).item() for x in episodes) / len(episodes)


def test_fitted_temperature_lowers_the_episode_loss_and_leaves_the_backbone_alone() -> None:
    torch.manual_seed(0)
    model = FewShotModel("conv4", "proto")
    onehot = F.one_hot(torch.arange(WAYS).repeat_interleave(SHOTS), WAYS).float()
    yq = torch.arange(WAYS).repeat_interleave(QUERIES)
    episodes = _episodes(4, seed=1)
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    before = _mean_loss(model, episodes, onehot, yq)
    fitted = fit_log_scale(model, episodes, onehot, yq, lambda x: x)
    assert fitted is not None
    assert abs(fitted[0] - before) < 1e-3                       # it reports the loss at the old scale
    assert fitted[1] < before                                    # and lowered it
    assert abs(_mean_loss(model, episodes, onehot, yq) - fitted[1]) < 1e-3
    assert model.method.log_scale.item() != 0.0                 # the scale moved off its initial 1
    for k, v in model.backbone.state_dict().items():             # BatchNorm statistics included
        assert torch.equal(v, backbone[k]), k
    held_out = _episodes(4, seed=2)                              # a scale, not a fit to 4 episodes' noise
    assert _mean_loss(model, held_out, onehot, yq) < before


def test_a_rule_without_a_temperature_is_left_unchanged() -> None:
    model = FewShotModel("conv4", "ridge")
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    onehot = F.one_hot(torch.arange(WAYS).repeat_interleave(SHOTS), WAYS).float()
    assert fit_log_scale(model, _episodes(1, 0), onehot, torch.arange(WAYS).repeat_interleave(QUERIES),
                         lambda x: x) is None
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_which_runs_fit_the_temperature(tmp_path) -> None:
    assert head_never_meta_trained(TrainConfig(pretrain_steps=10))
    assert not head_never_meta_trained(TrainConfig())
    for phase, expected in (("pretrain", True), ("meta", False)):
        run = tmp_path / phase
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"best": {"phase": phase, "step": 5}}))
        assert head_never_meta_trained(TrainConfig(init_from=str(run))) is expected
