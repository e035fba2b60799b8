"""Episodic accuracy measured through the device runtime (preprocess -> ONNX backbone -> adapt -> classify)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgemeta.data.classes import ClassImages
from edgemeta.data.episodes import EpisodeSampler
from edgemeta.metrics import mean_ci95
from edgemeta.runtime.classifier import FewShotClassifier
from edgemeta.runtime.loaded_bundle import Bundle


def runtime_images(x: np.ndarray) -> np.ndarray:
    """Episode images ``[N, C, H, W]`` as the runtime takes arrays: grey ``[N, 1, H, W]`` as is, colour as
    ``[N, H, W, 3]`` (a view). Values ``v / 255`` of uint8 photos quantise back to ``v`` exactly, so the
    runtime's input is the stored one bit for bit."""
    return x.transpose(0, 2, 3, 1) if x.shape[1] == 3 else x


def evaluate_episodes(bundle: Bundle, data: ClassImages, ways: int, shots: int, queries: int,
                      episodes: int, seed: int = 0) -> dict[str, Any]:
    """Mean accuracy (%) ± 95% CI over ``episodes`` N-way K-shot episodes of ``data``'s classes.

    Each episode goes through :class:`FewShotClassifier` (``fit`` then ``predict``) with the class
    names as labels, exactly as an app would use it.
    """
    sampler = EpisodeSampler(data, ways, shots, queries, seed)
    clf = FewShotClassifier(bundle)
    names = np.asarray(data.names)
    accs = np.empty(episodes)
    t0 = time.perf_counter()
    for e in range(episodes):
        ep = sampler.episode(e)
        labels = names[ep.classes]
        clf.fit(runtime_images(ep.support_x), labels[ep.support_y])
        accs[e] = (clf.predict(runtime_images(ep.query_x)) == labels[ep.query_y]).mean() * 100.0
    acc, ci = mean_ci95(accs)
    return {"ways": ways, "shots": shots, "queries": queries, "episodes": episodes, "precision": bundle.precision,
            "accuracy": round(acc, 3), "ci95": round(ci, 3), "seed": seed, "classes": data.n_classes,
            "seconds": round(time.perf_counter() - t0, 2)}
