"""Masked soft k-means: the torch module and its exported refine.onnx (through onnxruntime, as on the
device) against an independent float64 numpy oracle written from Ren et al. 2018 and the module's
docstring; the mask fit on synthetic episodes with distractors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemeta.runtime.loaded_bundle import make_session
from edgemeta.runtime.semisupervised import REFINE_INPUTS
from edgemeta.train.refine_export import refine_graph
from edgemeta.train.soft_kmeans import MaskedSoftKMeans, fit_mask

D = 16


def refine64(x: np.ndarray, y: np.ndarray, c: int, u: np.ndarray, scale: float, beta: float, gamma: float,
             steps: int = 1) -> np.ndarray:
    """float64 refined prototypes ``[c, D]``: class means, then ``steps`` times: soft assignment
    ``softmax(-scale * d)`` of every unlabelled row, mask ``sigmoid(gamma (beta - d / mean_rows d))``,
    prototypes = (class sum + weighted unlabelled sum) / (count + weight sum)."""
    x, u = x.astype(np.float64), u.astype(np.float64)
    sums = np.stack([x[y == k].sum(0) for k in range(c)])
    counts = np.array([(y == k).sum() for k in range(c)], np.float64)
    p = sums / counts[:, None]
    for _ in range(steps):
        d = ((u[:, None, :] - p[None]) ** 2).sum(-1)                        # [U, c], computed directly
        e = np.exp(-scale * d - (-scale * d).max(1, keepdims=True)) if len(u) else d
        z = e / e.sum(1, keepdims=True) if len(u) else d
        rel = d / (d.mean(0, keepdims=True) + 1e-8) if len(u) else d
        w = z / (1.0 + np.exp(-gamma * (beta - rel)))
        p = (sums + w.T @ u) / (counts + w.sum(0))[:, None]
    return p


def task(seed: int, c: int = 5, shots: tuple[int, ...] = (1, 3, 2, 1, 4), per_class: int = 4, distractors: int = 2):
    """Clustered embeddings: uneven shots, unsorted labels, unlabelled rows of the classes and of distractor
    clusters (so the mask has something to tell apart)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (c + distractors, D))
    y = np.concatenate([np.full(k, i) for i, k in enumerate(shots)])
    rng.shuffle(y)
    x = centres[y] + rng.normal(0, 0.35, (len(y), D))
    uy = np.concatenate([np.repeat(np.arange(c), per_class), np.repeat(np.arange(c, c + distractors), per_class)])
    u = centres[uy] + rng.normal(0, 0.35, (len(uy), D))
    return x.astype(np.float32), y, u.astype(np.float32)


def _torch(module: MaskedSoftKMeans, x: np.ndarray, y: np.ndarray, c: int, u: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x), torch.eye(c)[torch.from_numpy(y)], torch.from_numpy(u)).numpy()


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_module_and_onnx_graph_equal_the_float64_oracle(seed, steps):
    module = MaskedSoftKMeans(scale=0.8, steps=steps, beta=0.6, gamma=12.0).eval()
    session = make_session(refine_graph(module, D))
    x, y, u = task(seed)
    want = refine64(x, y, 5, u, 0.8, 0.6, 12.0, steps)
    got_torch = _torch(module, x, y, 5, u)
    got_onnx = session.run(["prototypes"], dict(zip(REFINE_INPUTS, (x, np.eye(5, dtype=np.float32)[y], u))))[0]
    np.testing.assert_allclose(got_torch, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_onnx, want, rtol=1e-4, atol=1e-5)
    plain = np.stack([x[y == k].mean(0) for k in range(5)])
    assert np.abs(want - plain).max() > 1e-2          # the unlabelled rows did move the prototypes


def test_no_unlabelled_row_gives_the_class_means_in_torch_and_onnx():
    module = MaskedSoftKMeans(scale=1.0).eval()
    session = make_session(refine_graph(module, D))
    x, y, _ = task(3)
    none = np.zeros((0, D), np.float32)
    plain = np.stack([x[y == k].mean(0) for k in range(5)])
    np.testing.assert_allclose(_torch(module, x, y, 5, none), plain, rtol=1e-6, atol=1e-6)
    got = session.run(["prototypes"], dict(zip(REFINE_INPUTS, (x, np.eye(5, dtype=np.float32)[y], none))))[0]
    np.testing.assert_allclose(got, plain, rtol=1e-6, atol=1e-6)


def test_the_mask_keeps_distractors_out():
    """A sharp mask leaves a far distractor's pull near zero; without a mask (beta huge) it pulls."""
    x, y, u = task(4, distractors=0)
    far = np.full((3, D), 8.0, np.float32)
    with_mask = refine64(x, y, 5, np.concatenate([u, far]), 1.0, 0.6, 20.0)
    no_mask = refine64(x, y, 5, np.concatenate([u, far]), 1.0, 1e6, 20.0)
    clean = refine64(x, y, 5, u, 1.0, 0.6, 20.0)
    assert np.abs(with_mask - clean).max() < 0.05 < np.abs(no_mask - clean).max()


def test_fit_mask_lowers_the_episode_loss_on_clustered_classes():
    """Starting from a mask that lets distractors in (beta 3), the fit lowers the query loss measured on
    the same 40 held-out episodes (lr 0 evaluates without changing anything)."""
    rng = np.random.default_rng(5)
    n_classes, per = 60, 20
    centres = rng.normal(0, 1.0, (n_classes, D))
    emb = (np.repeat(centres, per, 0) + rng.normal(0, 0.6, (n_classes * per, D))).astype(np.float32)
    offsets, counts = np.arange(n_classes) * per, np.full(n_classes, per)
    settings = ((5, 1, 5, 5), (5, 1, 5, 0))

    def held_out_loss(module: MaskedSoftKMeans) -> float:
        return fit_mask(module, emb, offsets, counts, steps=40, lr=0.0, settings=settings, seed=99)["final_loss"]

    module = MaskedSoftKMeans(scale=1.0, beta=3.0, gamma=10.0)
    start = held_out_loss(module)
    fit_mask(module, emb, offsets, counts, steps=150, lr=0.05, settings=settings, seed=1)
    assert held_out_loss(module) < start
    assert module.settings()["beta"] < 3.0


def test_gradients_reach_the_embeddings_so_a_backbone_can_be_meta_trained_through_it():
    x, y, u = task(6)
    s = torch.from_numpy(x).requires_grad_()
    un = torch.from_numpy(u).requires_grad_()
    module = MaskedSoftKMeans(scale=0.8, beta=0.6, gamma=12.0)
    protos = module(s, torch.eye(5)[torch.from_numpy(y)], un)
    q = torch.from_numpy(x[:5])
    logits = -module.scale * ((q[:, None, :] - protos[None]) ** 2).sum(-1)
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[:5])).backward()
    for grad in (s.grad, un.grad, module.beta.grad, module.log_gamma.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
