"""Per-layer conv4 widths and Net2WiderNet widening: the widened network computes the narrow one's
embedding, its symmetry-breaking noise still does and lets the copies diverge, bad widths are
refused, and a widened conv4 passes the export's torch/onnxruntime parity gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgemeta.errors import InputError
from edgemeta.train.backbones import Conv4, build_backbone
from edgemeta.train.model import FewShotModel
from edgemeta.train.widen import replica_map, widen_conv4

NINE_VIEW = Path(__file__).resolve().parents[1] / "models" / "omniglot-conv4"


def _narrow(seed: int = 0, final_pool: bool = False) -> Conv4:
    """A random eval-mode conv4 whose BatchNorms are not identities (random affine terms and statistics)."""
    torch.manual_seed(seed)
    m = Conv4(1, 64, (28, 28), final_pool)
    with torch.no_grad():
        for blk in m.blocks:
            bn = blk[1]
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
            bn.running_mean.normal_(0.0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _embed(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m(x)


def test_conv4_widths_set_each_layer_and_hidden_stays_the_shorthand():
    wide = build_backbone("conv4", widths=[64, 64, 160, 64], final_pool=False)
    assert [blk[0].out_channels for blk in wide.blocks] == [64, 64, 160, 64]
    assert [blk[0].in_channels for blk in wide.blocks] == [1, 64, 64, 160]
    assert wide.out_dim == 64 * 3 * 3 and _embed(wide.eval(), torch.rand(2, 1, 28, 28)).shape == (2, 576)
    assert build_backbone("conv4", widths=[8, 8, 8, 32]).out_dim == 32
    plain, short = build_backbone("conv4"), build_backbone("conv4", hidden=32)
    assert plain.widths == (64, 64, 64, 64) and short.widths == (32, 32, 32, 32)
    assert {k: v.shape for k, v in short.state_dict().items()} == \
        {k: v.shape for k, v in build_backbone("conv4", widths=[32] * 4).state_dict().items()}
    for bad in ([64, 64, 64], [64, 0, 64, 64]):
        with pytest.raises(ValueError, match="four positive channel counts"):
            build_backbone("conv4", widths=bad)


@pytest.mark.parametrize("widths", [[64, 64, 160, 64], [80, 80, 96, 64], [96, 128, 200, 64], [64, 64, 64, 64]])
def test_widening_without_noise_preserves_the_embedding(widths):
    narrow = _narrow(1)
    x = torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    wide = widen_conv4(narrow, widths, noise=0.0, seed=3)
    assert list(wide.widths) == widths and wide.out_dim == narrow.out_dim
    z, zw = _embed(narrow, x), _embed(wide, x)
    assert torch.abs(z).max() > 0.1
    assert torch.abs(zw - z).max() < 1e-5
    assert narrow.widths == (64, 64, 64, 64)                           # the narrow network is untouched


def test_widening_the_shipped_teachers_single_view_preserves_its_embedding():
    from edgemeta.contract.bundle import read_bundle
    from edgemeta.train.distill import student_from_teacher

    if not (NINE_VIEW / "manifest.json").is_file():  # pragma: no cover - shipped with the checkout
        pytest.skip(f"shipped bundle not found at {NINE_VIEW}")
    narrow = student_from_teacher(*read_bundle(NINE_VIEW)).backbone
    x = torch.rand(9, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    for noise in (0.0, 0.05):
        assert torch.abs(_embed(widen_conv4(narrow, [64, 64, 320, 64], noise, seed=5), x) - _embed(narrow, x)).max() < 1e-5


def test_noise_keeps_the_function_but_breaks_the_copies_symmetry():
    """With noise the replicas' outgoing weights differ, so one gradient step moves their incoming
    weights apart; without noise the copies stay identical forever."""
    narrow = _narrow(6)
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    src = replica_map(64, 96, torch.Generator().manual_seed(8))        # the map widen_conv4 draws with seed 8
    assert src[:64].tolist() == list(range(64)) and 0 <= int(src.min()) and int(src.max()) < 64
    j = 64                                                              # the first copy, and its source channel
    c = int(src[j])
    spread = {}
    for noise in (0.0, 0.1):
        wide = widen_conv4(narrow, [64, 64, 96, 64], noise, seed=8)
        assert torch.abs(_embed(wide, x) - _embed(narrow, x)).max() < 1e-5
        out_w = wide.blocks[3][0].weight
        assert (torch.equal(out_w[:, j], out_w[:, c])) == (noise == 0.0)
        wide.train(False)
        loss = (wide(x) ** 2).sum()
        loss.backward()
        grad = wide.blocks[2][0].weight.grad
        spread[noise] = float(torch.abs(grad[j] - grad[c]).max())
    assert spread[0.0] == 0.0 and spread[0.1] > 1e-6


def test_widening_refuses_narrower_layers_a_changed_embedding_and_bad_noise():
    narrow = _narrow(9)
    for bad in ([32, 64, 128, 64], [64, 64, 128, 128], [64, 64, 128], [64, 64, 128, 32]):
        with pytest.raises(InputError, match="four widths"):
            widen_conv4(narrow, bad)
    for noise in (-0.1, float("nan")):
        with pytest.raises(InputError, match="noise"):
            widen_conv4(narrow, [64, 64, 128, 64], noise)


def test_a_widened_conv4_passes_the_export_parity_gate():
    from edgemeta.train.export import check_parity, graphs_from_model

    model = FewShotModel("conv4", "proto", (28, 28), {"widths": [64, 64, 160, 64], "final_pool": False}).eval()
    model.backbone = widen_conv4(_narrow(10), [64, 64, 160, 64], noise=0.05, seed=11)
    graphs = graphs_from_model(model, (1, 28, 28))
    g = np.random.default_rng(12)
    episodes = [((g.random((10, 1, 28, 28)) < 0.2).astype(np.float32), np.arange(10) % 5,
                 (g.random((7, 1, 28, 28)) < 0.2).astype(np.float32)) for _ in range(3)]
    report = check_parity(model, graphs, episodes)
    assert report["prediction_mismatches"] == 0 and report["episodes_checked"] == 3
    import onnx

    convs = [n for n in onnx.load_from_string(graphs["backbone.onnx"]).graph.node if n.op_type == "Conv"]
    assert len(convs) == 4
