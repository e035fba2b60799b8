"""Export-time calibration of open-set ("unknown") rejection, on held-out validation classes.

Open-set episodes: ``ways`` known classes (support and queries) plus ``ways`` other classes whose
queries belong to none of the known ones, run through the device runtime. The threshold is the
max-logit value that accepts ``target_accept`` of the known queries; the runtime only reads it
from the manifest (:mod:`edgemeta.openset`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgemeta.evaluation import runtime_images
from edgemeta.data.classes import ClassImages
from edgemeta.data.episodes import EpisodeSampler
from edgemeta.openset import auroc
from edgemeta.runtime.classifier import FewShotClassifier
from edgemeta.runtime.loaded_bundle import Bundle


def open_set_scores(bundle: Bundle, data: ClassImages, ways: int, shots: int, queries: int,
                    episodes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Max-logit scores of known queries, of unknown queries, and whether each known query was
    classified correctly: three 1-D arrays, ``episodes * ways * queries`` long each."""
    sampler = EpisodeSampler(data, 2 * ways, shots, queries, seed)
    clf = FewShotClassifier(bundle)
    known, unknown, correct = [], [], []
    for e in range(episodes):
        ep = sampler.episode(e)
        s = ep.support_y < ways
        clf.fit(runtime_images(ep.support_x[s]), ep.support_y[s])
        logits = clf.decision_function(runtime_images(ep.query_x))
        score = logits.max(axis=1)
        k = ep.query_y < ways
        known.append(score[k])
        unknown.append(score[~k])
        correct.append(clf.classes_[logits[k].argmax(1)] == ep.query_y[k])
    return np.concatenate(known), np.concatenate(unknown), np.concatenate(correct)


def calibrate(known: np.ndarray, unknown: np.ndarray, correct: np.ndarray,
              target_accept: float = 0.95) -> dict[str, Any]:
    """Threshold accepting ``target_accept`` of known queries, AUROC, and the trade-off table."""
    rows = []
    for acc_rate in (0.8, 0.9, 0.95, 0.99):
        thr = float(np.quantile(known, 1.0 - acc_rate))
        accepted = known >= thr
        rows.append({"known_accept": round(float(accepted.mean()), 4),
                     "unknown_reject": round(float((unknown < thr).mean()), 4),
                     "accuracy_on_accepted": round(float(correct[accepted].mean()) * 100, 2),
                     "threshold": thr})
    return {"threshold": float(np.quantile(known, 1.0 - target_accept)), "auroc": round(auroc(known, unknown), 4),
            "closed_set_accuracy": round(float(correct.mean()) * 100, 2), "tradeoff": rows}


def calibrate_bundle(bundle: Bundle, val: ClassImages, ways: int = 5, shots: tuple[int, ...] = (1, 5),
                     queries: int = 15, episodes: int = 300, target_accept: float = 0.95, seed: int = 41) -> dict[str, Any]:
    """The manifest's ``open_set`` entry, calibrated on ``val`` (never test) classes."""
    ways = min(ways, val.n_classes // 2)
    out: dict[str, Any] = {"score": "max_logit", "target_known_accept": target_accept,
                           "calibrated_on": f"val classes, {ways}-way, {queries} queries per class, {ways} unknown "
                                            f"classes, {episodes} episodes",
                           "threshold_by_shots": {}, "auroc_by_shots": {}, "tradeoff_by_shots": {}}
    for k in shots:
        cal = calibrate(*open_set_scores(bundle, val, ways, k, queries, episodes, seed), target_accept=target_accept)
        out["threshold_by_shots"][str(k)] = cal["threshold"]
        out["auroc_by_shots"][str(k)] = cal["auroc"]
        out["tradeoff_by_shots"][str(k)] = cal["tradeoff"]
    return out
