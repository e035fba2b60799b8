"""Backbone registry, shapes, BatchNorm folding and the torch Proto rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemeta.train.backbones import BACKBONES, build_backbone
from edgemeta.train.methods import METHODS, Proto, build_method
from edgemeta.train.model import FewShotModel


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet18'; known backbones: \['conv4', 'mlp', 'resnet12'\]"):
        build_backbone("resnet18")
    assert {"conv4", "mlp", "resnet12"} <= set(BACKBONES)


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


# ------------------------------------------------------------------------------------ colour backbones
def _busy_statistics(m: torch.nn.Module, shape: tuple[int, ...]) -> torch.nn.Module:
    """``m`` after a few training-mode batches (non-trivial BatchNorm running statistics), in eval mode."""
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m(torch.rand(*shape))
    return m.eval()


@pytest.mark.parametrize("name,kwargs,dim", [
    ("conv4", {}, 1600),                                  # 64 x 5 x 5, ProtoNets / MAML on mini-ImageNet
    ("conv4", {"final_pool": False}, 64 * 10 * 10),
    ("resnet12", {}, 640),                                # global average pooling, RFS
    ("resnet12", {"avg_pool": False}, 640 * 5 * 5),       # flattened, MetaOptNet
])
def test_colour_backbones_shapes_at_84(name, kwargs, dim):
    torch.manual_seed(0)
    m = build_backbone(name, in_channels=3, image_size=(84, 84), **kwargs).eval()
    assert m.out_dim == dim
    with torch.no_grad():
        z = m(torch.rand(2, 3, 84, 84))
    assert z.shape == (2, dim) and torch.isfinite(z).all()


def test_parameter_counts():
    count = lambda m: sum(p.numel() for p in m.parameters())       # noqa: E731
    assert count(build_backbone("resnet12", in_channels=3)) == 12_424_320          # MetaOptNet / RFS: ~12.4M
    # conv4-64: the 3 -> 64 first convolution and three 64 -> 64 ones, each with BatchNorm
    assert count(build_backbone("conv4", in_channels=3, image_size=(84, 84))) == \
        (3 * 9 * 64 + 64) + 3 * (64 * 9 * 64 + 64) + 4 * 2 * 64


def test_colour_normalisation_is_fixed_imagenet_statistics():
    from edgemeta.train.backbones import IMAGENET_MEAN, IMAGENET_STD, Normalize

    m = build_backbone("conv4", in_channels=3, image_size=(84, 84))
    assert isinstance(m.norm, Normalize)
    assert not any("norm." in k for k in m.state_dict())              # buffers of the code, not trained weights
    assert not any(p is m.norm.mean or p is m.norm.std for p in m.parameters())
    x = torch.rand(2, 3, 5, 5)
    want = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(m.norm(x), want, rtol=0, atol=0)
    grey = build_backbone("conv4", in_channels=1)
    assert isinstance(grey.norm, torch.nn.Identity)


@pytest.mark.parametrize("name", ["conv4", "resnet12"])
def test_colour_folded_equals_eval_mode(name):
    torch.manual_seed(4)
    m = _busy_statistics(build_backbone(name, in_channels=3, image_size=(84, 84)), (6, 3, 84, 84))
    f = m.folded()
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in f.modules())
    x = torch.rand(3, 3, 84, 84)
    with torch.no_grad():
        torch.testing.assert_close(f(x), m(x), rtol=1e-4, atol=1e-4)


def test_dropblock_only_in_training():
    from edgemeta.train.backbones import DropBlock

    torch.manual_seed(5)
    d = DropBlock(0.1, block=3)
    x = torch.rand(4, 8, 10, 10) + 1.0
    d.train()
    y = d(x)
    dropped = (y == 0).float().mean().item()
    assert 0.03 < dropped < 0.3                                       # about drop_rate of the activations
    assert torch.allclose(y.sum() / x.sum(), torch.tensor(1.0), atol=0.15)   # rescaled to keep the mean
    d.eval()
    assert torch.equal(d(x), x)
    assert torch.equal(DropBlock(0.0).train()(x), x)
    m = build_backbone("resnet12", in_channels=3, image_size=(32, 32), drop_rate=0.1).eval()
    with torch.no_grad():
        a = torch.rand(2, 3, 32, 32)
        assert torch.equal(m(a), m(a))                                # eval: deterministic, no DropBlock


@pytest.mark.parametrize("name,kwargs", [("conv4", {}), ("resnet12", {})])
def test_colour_export_parity(name, kwargs):
    """The exported backbone.onnx (normalisation inside it) agrees with torch: the export parity gate."""
    import onnxruntime as ort

    from edgemeta.train.export import check_parity, graphs_from_model

    torch.manual_seed(6)
    model = FewShotModel(name, "proto", (84, 84), backbone_kwargs=kwargs, in_channels=3)
    _busy_statistics(model.backbone, (4, 3, 84, 84))
    model.eval()
    graphs = graphs_from_model(model, (3, 84, 84))
    sess = ort.InferenceSession(graphs["backbone.onnx"], providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [3, 84, 84]
    g = np.random.default_rng(0)
    x = g.random((5, 3, 84, 84), dtype=np.float32)
    with torch.no_grad():
        want = model.backbone(torch.from_numpy(x)).numpy()
    got = sess.run(["embeddings"], {"images": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    sx, qx = g.random((5, 3, 84, 84), dtype=np.float32), g.random((4, 3, 84, 84), dtype=np.float32)
    report = check_parity(model, graphs, [(sx, np.arange(5), qx)])
    assert report["prediction_mismatches"] == 0
