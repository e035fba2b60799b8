"""Open-set ("unknown") scoring on the device: a query's score is its maximum logit, and the
runtime rejects queries below the threshold calibrated at export (the manifest's ``open_set``
entry, read by ``FewShotClassifier.threshold_for``). :func:`auroc` measures how well the score
separates known from unknown queries (used by the demo and by the calibration at export,
:mod:`edgemeta.train.openset_calibration`).
"""

from __future__ import annotations

import numpy as np


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Probability that a known query scores above an unknown one (ties count half); ``known [n1]``
    and ``unknown [n0]`` are 1-D score arrays."""
    allv = np.concatenate([known, unknown])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    # ties share their average rank
    sorted_v = allv[order]
    i = 0
    while i < len(sorted_v):
        j = i
        while j + 1 < len(sorted_v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        if j > i:
            ranks[order[i:j + 1]] = (i + j + 2) / 2.0
        i = j + 1
    n1, n0 = len(known), len(unknown)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))
