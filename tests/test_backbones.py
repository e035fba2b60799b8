"""Backbone registry, shapes, BatchNorm folding and the torch Proto rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemeta.train.backbones import BACKBONES, build_backbone
from edgemeta.train.methods import METHODS, Proto, build_method
from edgemeta.train.model import FewShotModel


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet12'; known backbones: \['conv4', 'mlp'\]"):
        build_backbone("resnet12")
    assert {"conv4", "mlp"} <= set(BACKBONES)


def test_unknown_method_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown method 'maml'; known methods: \[.*'proto'.*\]") as exc:
        build_method("maml", 64)
    for name in METHODS:
        assert repr(name) in str(exc.value)
    assert METHODS["proto"] is Proto
    with pytest.raises(ValueError, match="unknown backbone"):
        FewShotModel("vit", "proto")


@pytest.mark.parametrize("name,kwargs,size,dim", [
    ("conv4", {}, (28, 28), 64),
    ("conv4", {"hidden": 32}, (28, 28), 32),
    ("conv4", {}, (84, 84), 64 * 5 * 5),
    ("conv4", {}, (16, 16), 64),
    ("mlp", {}, (28, 28), 64),
    ("mlp", {"out_dim": 16, "hidden": 32}, (10, 12), 16),
])
def test_output_shapes(name, kwargs, size, dim):
    torch.manual_seed(0)
    m = build_backbone(name, image_size=size, **kwargs).eval()
    assert m.out_dim == dim
    with torch.no_grad():
        z = m(torch.rand(3, 1, *size))
    assert z.shape == (3, dim) and z.dtype == torch.float32
    model = FewShotModel(name, "proto", size, backbone_kwargs=kwargs)
    assert model.embedding_dim == dim


def test_conv4_needs_16_pixels():
    with pytest.raises(ValueError, match=r"at least 16x16, got \(8, 8\)"):
        build_backbone("conv4", image_size=(8, 8))


@pytest.mark.parametrize("name", ["conv4", "mlp"])
def test_folded_equals_eval_mode_and_has_no_batch_dependence(name):
    torch.manual_seed(1)
    m = build_backbone(name)
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(16, 1, 28, 28))                      # non-trivial running statistics
    m.eval()
    f = m.folded()
    assert m.training is False and f.training is False
    x = torch.rand(9, 1, 28, 28)
    with torch.no_grad():
        ref, got = m(x), f(x)
        alone = torch.cat([f(x[i:i + 1]) for i in range(9)])
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone, got, rtol=1e-5, atol=1e-6)
    if name == "conv4":
        assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in f.modules())
        assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())      # the original is untouched


def test_proto_torch_rule_matches_numpy():
    torch.manual_seed(2)
    proto = Proto(init_scale=0.5)
    assert proto.hparams() == {"distance": "squared_euclidean", "scale": pytest.approx(0.5)}
    rng = np.random.default_rng(0)
    s = rng.standard_normal((11, 8))
    y = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2])
    q = rng.standard_normal((4, 8))
    onehot = np.eye(3)[y]
    with torch.no_grad():
        p = proto.adapt(torch.from_numpy(s), torch.from_numpy(onehot))
        logits = proto.classify(torch.from_numpy(q), p).numpy()
    means = np.stack([s[y == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(p["prototypes"].numpy(), means, rtol=1e-12)
    np.testing.assert_allclose(logits, -0.5 * ((q[:, None] - means[None]) ** 2).sum(-1), rtol=1e-10)


def test_episode_logits_shape_and_gradients():
    torch.manual_seed(3)
    model = FewShotModel("conv4", "proto")
    x = torch.rand(5 * 2 + 7, 1, 28, 28)
    logits = model.episode_logits(x, ways=5, shots=2)
    assert logits.shape == (7, 5)
    logits.sum().backward()
    assert model.method.log_scale.grad is not None
    assert all(p.grad is not None for p in model.backbone.parameters())
