"""torch <-> onnxruntime parity, and the ONNX head graphs against a float64 numpy oracle of Proto."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgemeta.data.episodes import EpisodeSampler
from edgemeta.errors import ExportError
from edgemeta.train.export import EMBEDDING_TOL, check_parity, graphs_from_model
from edgemeta.train.methods import METHODS
from edgemeta.train.model import FewShotModel


def session(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def proto_oracle(support: np.ndarray, labels: np.ndarray, n_classes: int, query: np.ndarray,
                 scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Prototypes = class means; logits = -scale * ||x - p||^2, all in float64."""
    s, q = support.astype(np.float64), query.astype(np.float64)
    protos = np.stack([s[labels == c].mean(0) for c in range(n_classes)])
    d2 = ((q[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
    return protos, -scale * d2


def random_model(backbone: str, seed: int, method: str = "proto") -> FewShotModel:
    """A freshly initialised model whose BatchNorm running statistics are not the defaults."""
    torch.manual_seed(seed)
    model = FewShotModel(backbone, method, (28, 28), method_kwargs={"init_scale": 0.37} if method == "proto" else {})
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.backbone(torch.rand(32, 1, 28, 28) * 0.8 + 0.1)
    bns = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert bns and all(float(m.running_mean.abs().max()) > 1e-3 for m in bns)
    assert all(float((m.running_var - 1).abs().max()) > 1e-3 for m in bns)
    return model.eval()


def val_episodes(val, n: int = 6) -> list[tuple[np.ndarray, ...]]:
    eps = []
    for ways, shots in ((5, 1), (5, 5), (20, 1)):
        sampler = EpisodeSampler(val, ways, shots, 5, seed=3)
        for e in range(n // 3):
            ep = sampler.episode(e)
            eps.append((ep.support_x, ep.support_y, ep.query_x))
    return eps


@pytest.fixture(scope="module", params=["conv4", "mlp"])
def random_graphs(request):
    model = random_model(request.param, seed=5)
    return model, graphs_from_model(model, (1, 28, 28))


def test_check_parity_on_random_models(random_graphs, lake_val):
    model, graphs = random_graphs
    report = check_parity(model, graphs, val_episodes(lake_val))
    assert report["episodes_checked"] == 6
    assert report["prediction_mismatches"] == 0
    assert report["embedding_max_abs_random"] <= EMBEDDING_TOL
    assert report["embedding_max_abs_episodes"] <= EMBEDDING_TOL
    assert report["logit_max_abs"] <= EMBEDDING_TOL
    assert model.training is False


@pytest.mark.parametrize("n", [1, 2, 33])
def test_backbone_graph_matches_eval_mode_torch(random_graphs, lake_val, n):
    model, graphs = random_graphs
    x = lake_val.images[:n]
    with torch.no_grad():
        zt = model.backbone(torch.from_numpy(x)).numpy()
    zo = session(graphs["backbone.onnx"]).run(["embeddings"], {"images": x})[0]
    assert zo.shape == (n, model.embedding_dim)
    np.testing.assert_allclose(zo, zt, rtol=1e-4, atol=1e-5)
    # no dependence on the batch: each image alone gives the same embedding
    alone = np.concatenate([session(graphs["backbone.onnx"]).run(["embeddings"], {"images": x[i:i + 1]})[0]
                            for i in range(min(n, 3))])
    np.testing.assert_allclose(alone, zo[:len(alone)], rtol=1e-5, atol=1e-6)


def test_check_parity_refuses_graphs_of_another_model(lake_val):
    model = random_model("conv4", seed=5)
    other = copy.deepcopy(model)
    with torch.no_grad():
        w = other.backbone.blocks[1][0].weight
        w.add_(0.05 * torch.randn_like(w))
    graphs = graphs_from_model(other, (1, 28, 28))
    with pytest.raises(ExportError, match="parity"):
        check_parity(model, graphs, val_episodes(lake_val, 3))
    # only the head differs (another temperature): embeddings agree, logits must not
    hot = copy.deepcopy(model)
    with torch.no_grad():
        hot.method.log_scale.fill_(np.log(5.0))
    with pytest.raises(ExportError, match=r"parity failed: .*relative logit diff"):
        check_parity(model, graphs_from_model(hot, (1, 28, 28)), val_episodes(lake_val, 3))


def _supports(rng: np.random.Generator):
    """(C, labels) with uneven shots, every class present, labels not sorted."""
    for c, max_shots in ((2, 1), (2, 5), (3, 4), (7, 3), (20, 2), (20, 6)):
        shots = rng.integers(1, max_shots + 1, c)
        labels = np.repeat(np.arange(c), shots)
        yield c, rng.permutation(labels)


def _head_check(ad, cl, scale: float, support: np.ndarray, labels: np.ndarray, c: int,
                query: np.ndarray) -> None:
    onehot = np.eye(c, dtype=np.float32)[labels]
    (protos,) = ad.run(["prototypes"], {"support_embeddings": support, "support_labels_onehot": onehot})
    logits = cl.run(["logits"], {"embeddings": query, "prototypes": protos})[0]
    p64, l64 = proto_oracle(support, labels, c, query, scale)
    assert protos.shape == (c, support.shape[1]) and logits.shape == (len(query), c)
    np.testing.assert_allclose(protos, p64, rtol=1e-5, atol=1e-5 * np.abs(p64).max())
    np.testing.assert_allclose(logits, l64, rtol=1e-4, atol=1e-4 * np.abs(l64).max())
    # identical decisions wherever the oracle's top-2 gap exceeds float32 rounding
    top2 = np.sort(l64, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4 * np.abs(l64).max()
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(logits.argmax(1)[clear], l64.argmax(1)[clear])


def test_exported_head_graphs_match_numpy_oracle_on_random_embeddings(bundle_dir, bundle):
    ad, cl = session((bundle_dir / "adapt.onnx").read_bytes()), session((bundle_dir / "classify.onnx").read_bytes())
    scale = bundle.manifest["head"]["scale"]
    rng = np.random.default_rng(0)
    D = bundle.embedding_dim
    for c, labels in _supports(rng):
        support = (rng.standard_normal((len(labels), D)) * rng.uniform(0.1, 3.0)).astype(np.float32)
        query = (rng.standard_normal((17, D)) * support.std()).astype(np.float32)
        _head_check(ad, cl, scale, support, labels, c, query)


def test_exported_head_graphs_match_numpy_oracle_on_real_embeddings(bundle_dir, bundle, lake_test):
    """The device path: real Omniglot test drawings through backbone.onnx, then the head vs the oracle."""
    ad, cl = session((bundle_dir / "adapt.onnx").read_bytes()), session((bundle_dir / "classify.onnx").read_bytes())
    scale = bundle.manifest["head"]["scale"]
    rng = np.random.default_rng(1)
    for c, labels in _supports(rng):
        classes = rng.choice(lake_test.n_classes, c, replace=False)
        used = np.zeros(c, np.int64)
        s_rows = []
        for y in labels:                          # support row i is a fresh drawing of class labels[i]
            s_rows.append(lake_test.offsets[classes[y]] + used[y])
            used[y] += 1
        support = bundle.embed(lake_test.images[np.array(s_rows)])
        q_rows = np.concatenate([lake_test.offsets[k] + 19 - np.arange(3) for k in classes])
        query = bundle.embed(lake_test.images[q_rows])
        _head_check(ad, cl, scale, support, labels, c, query)


def test_random_model_head_graphs_match_oracle(random_graphs):
    model, graphs = random_graphs
    ad, cl = session(graphs["adapt.onnx"]), session(graphs["classify.onnx"])
    scale = float(model.method.log_scale.detach().exp())
    assert abs(scale - 0.37) < 1e-6
    rng = np.random.default_rng(2)
    for c, labels in _supports(rng):
        support = rng.standard_normal((len(labels), model.embedding_dim)).astype(np.float32)
        query = rng.standard_normal((9, model.embedding_dim)).astype(np.float32)
        _head_check(ad, cl, scale, support, labels, c, query)


def test_class_columns_follow_onehot_columns(bundle):
    """Column j of the logits is the j-th one-hot column: permuting classes permutes columns."""
    rng = np.random.default_rng(3)
    support = rng.standard_normal((12, bundle.embedding_dim)).astype(np.float32)
    labels = np.arange(12) % 4
    query = rng.standard_normal((5, bundle.embedding_dim)).astype(np.float32)
    base = bundle.classify(query, bundle.adapt(support, np.eye(4, dtype=np.float32)[labels]))
    perm = np.array([2, 0, 3, 1])
    permuted = bundle.classify(query, bundle.adapt(support, np.eye(4, dtype=np.float32)[perm[labels]]))
    np.testing.assert_allclose(permuted[:, perm], base, rtol=1e-6)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_registered_method_exports_with_parity(method, lake_val):
    """Each adaptation rule's adapt/classify graphs reproduce torch for 5- and 20-way episodes
    (the graphs are traced at 5 classes, so the class count must really be a runtime dimension)."""
    model = random_model("conv4", seed=7, method=method)
    graphs = graphs_from_model(model, (1, 28, 28))
    report = check_parity(model, graphs, val_episodes(lake_val))
    assert report["prediction_mismatches"] == 0 and report["logit_max_abs"] <= EMBEDDING_TOL
    names = list(model.method.param_names)
    assert [o.name for o in session(graphs["adapt.onnx"]).get_outputs()] == names
    assert [i.name for i in session(graphs["classify.onnx"]).get_inputs()] == ["embeddings", *names]
