"""Semi-supervised episodes: labelled-only vs refined accuracy in the same episodes (numpy + the runtime).

Each episode is N-way K-shot Q-query plus ``M`` unlabelled images of each of its classes and ``M`` of
each of ``D`` distractor classes (classes of none of the episode's labels), every image used once
(Ren et al. 2018's test protocol). Every image of the evaluated classes is embedded once through the
bundle's preprocessing and backbone (as ``FewShotClassifier`` embeds it); each episode then runs
``adapt.onnx`` (labelled only) and ``refine.onnx`` (labelled + unlabelled) on the same support and
``classify.onnx`` on the same queries, so the two accuracies are paired.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemeta.data.classes import ClassImages
from edgemeta.errors import InputError
from edgemeta.evaluation import runtime_images
from edgemeta.metrics import mean_ci95
from edgemeta.runtime.classifier import FewShotClassifier
from edgemeta.runtime.loaded_bundle import Bundle
from edgemeta.runtime.semisupervised import require_refiner

EMBED_ROWS = 2048           # images preprocessed and embedded at a time


@dataclass(frozen=True)
class SemiEpisode:
    """Row indices of one semi-supervised episode (labels ``0..ways-1``).

    support ``[ways*shots]`` and query ``[ways*queries]``, class-major; unlabeled ``[U]``: ``M`` rows of
    each episode class, then ``M`` of each distractor class; unlabeled_class ``[U]``: the row's episode
    class, ``-1`` for a distractor.
    """

    support: np.ndarray
    query: np.ndarray
    unlabeled: np.ndarray
    unlabeled_class: np.ndarray


def check_episodes(counts: np.ndarray, ways: int, shots: int, queries: int, unlabeled: int,
                   distractors: int) -> np.ndarray:
    """The classes (indices into ``counts [n_classes]``) with images enough for one episode's class;
    :class:`InputError` when fewer than ``ways + distractors`` have."""
    need = shots + queries + unlabeled
    eligible = np.flatnonzero(counts >= need)
    if len(eligible) < ways + distractors:
        raise InputError(f"{ways}-way {shots}-shot {queries}-query episodes with {unlabeled} unlabeled per class and "
                         f"{distractors} distractor classes need {ways + distractors} classes of at least {need} images; "
                         f"this set has {len(eligible)} (lower --queries, --shots or --unlabeled, or add images)")
    return eligible


def sample_semi_episode(rng: np.random.Generator, offsets: np.ndarray, counts: np.ndarray, ways: int, shots: int,
                        queries: int, unlabeled: int, distractors: int) -> SemiEpisode:
    """Draw an episode from classes at ``offsets`` with ``counts`` rows each (``[n_classes]``); every row once."""
    eligible = check_episodes(counts, ways, shots, queries, unlabeled, distractors)
    need = shots + queries + unlabeled
    picked = rng.choice(eligible, ways + distractors, replace=False)
    rows = [offsets[c] + rng.permutation(counts[c])[:need] for c in picked]
    own = np.stack(rows[:ways]) if ways else np.zeros((0, need), np.int64)
    unl = [own[:, shots + queries:].reshape(-1)] + [r[shots + queries:] for r in rows[ways:]]
    unl_class = [np.repeat(np.arange(ways), unlabeled)] + [np.full(unlabeled, -1) for _ in rows[ways:]]
    return SemiEpisode(own[:, :shots].reshape(-1).astype(np.int64),
                       own[:, shots:shots + queries].reshape(-1).astype(np.int64),
                       np.concatenate(unl).astype(np.int64), np.concatenate(unl_class).astype(np.int64))


def embed_classes(bundle: Bundle, data: ClassImages, rows: int = EMBED_ROWS) -> np.ndarray:
    """float32 ``[n_images, D]``: every image of ``data`` through the bundle, as ``FewShotClassifier.embed``."""
    clf = FewShotClassifier(bundle)
    out = np.empty((data.n_images, bundle.embedding_dim), np.float32)
    for start in range(0, data.n_images, rows):
        stop = min(start + rows, data.n_images)
        out[start:stop] = clf.embed(runtime_images(data.batch(slice(start, stop))))
    return out


def evaluate_semi(bundle: Bundle, data: ClassImages, ways: int, shots: int, queries: int, unlabeled: int,
                  distractors: int, episodes: int, seed: int = 0,
                  embeddings: np.ndarray | None = None) -> dict[str, Any]:
    """Labelled-only and refined accuracy (%, mean ± 95% CI) over the same ``episodes`` episodes, and their
    paired difference. ``embeddings``: :func:`embed_classes` of ``data``, if already computed."""
    refiner = require_refiner(bundle)
    if unlabeled < 0 or distractors < 0:
        raise InputError(f"--unlabeled and --distractors must be >= 0, got {unlabeled} and {distractors}")
    if distractors and not unlabeled:
        raise InputError("--distractors adds M unlabeled images of each distractor class; give --unlabeled M > 0")
    if (ways + distractors) * unlabeled > refiner.max_unlabeled:
        raise InputError(f"{(ways + distractors) * unlabeled} unlabeled images per episode exceed this bundle's pool "
                         f"of {refiner.max_unlabeled} (refine.max_unlabeled)")
    check_episodes(data.counts, ways, shots, queries, unlabeled, distractors)      # before any image is embedded
    t0 = time.perf_counter()
    emb = embed_classes(bundle, data) if embeddings is None else embeddings
    t_embed = time.perf_counter() - t0
    onehot = np.eye(ways, dtype=np.float32)[np.repeat(np.arange(ways), shots)]
    yq = np.repeat(np.arange(ways), queries)
    plain, refined = np.empty(episodes), np.empty(episodes)
    for e in range(episodes):
        ep = sample_semi_episode(np.random.default_rng([seed, e]), data.offsets, data.counts, ways, shots, queries,
                                 unlabeled, distractors)
        s, q = emb[ep.support], emb[ep.query]
        plain[e] = (bundle.classify(q, bundle.adapt(s, onehot)).argmax(1) == yq).mean() * 100.0
        params = refiner.refine(s, onehot, emb[ep.unlabeled])
        refined[e] = (bundle.classify(q, params).argmax(1) == yq).mean() * 100.0
    (pa, pc), (ra, rc), (ga, gc) = mean_ci95(plain), mean_ci95(refined), mean_ci95(refined - plain)
    return {"ways": ways, "shots": shots, "queries": queries, "unlabeled": unlabeled, "distractors": distractors,
            "episodes": episodes, "precision": bundle.precision, "seed": seed, "classes": data.n_classes,
            "labelled_accuracy": round(pa, 3), "labelled_ci95": round(pc, 3),
            "refined_accuracy": round(ra, 3), "refined_ci95": round(rc, 3),
            "gain": round(ga, 3), "gain_ci95": round(gc, 3),
            "embed_seconds": round(t_embed, 2), "seconds": round(time.perf_counter() - t0, 2)}


def report_semi(bundle: Bundle, data: ClassImages, split: str, source: str, ways: int, shots: int, queries: int,
                unlabeled: int, distractors: int, episodes: int, seed: int, as_json: bool,
                figure: Any = None) -> str:
    """``edgemeta eval --unlabeled M --distractors D``: one JSON object, or one line of text."""
    if figure is not None:
        raise InputError("--figure draws labelled episodes; leave it out with --unlabeled")
    res = evaluate_semi(bundle, data, ways, shots, queries, unlabeled, distractors, episodes, seed)
    res.update({"split": split, "bundle": source, "method": bundle.method})
    if as_json:
        return json.dumps(res)
    return (f"{bundle.method} on {split}: {ways}-way {shots}-shot {queries}-query, {unlabeled} unlabeled per class, "
            f"{distractors} distractor classes, {episodes} episodes, {res['precision']}: labelled only "
            f"{res['labelled_accuracy']:.2f} ± {res['labelled_ci95']:.2f} %, refined {res['refined_accuracy']:.2f} ± "
            f"{res['refined_ci95']:.2f} % (gain {res['gain']:+.2f} ± {res['gain_ci95']:.2f}; {res['seconds']:.1f}s)")
