"""The regressor's private state: per group, the sufficient statistics of its samples, in the v2 state
container (:mod:`edgemeta.runtime.state`: header, checksum, optional AES-256-GCM, bounds).

Arrays (``docs/state-format.md``, regression extension): ``group_gram`` float64 ``[G, P, P]``
(``sum phi^T phi`` of each group's samples), ``group_targets`` float64 ``[G, P, O]`` (``sum phi^T y``),
``group_samples`` int64 ``[G]``, and ``head.<name>`` float32 (the adapted head, for readers in other
languages). Meta: ``bundle_id``, ``kind`` ``"regression"``, ``method``, ``groups`` (all strings or all
64-bit integers, each once, in array order). No sample, feature vector or target is stored, only
these sums (a group of one sample still determines that sample's features and target).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemeta.errors import StateError
from edgemeta.runtime.state import pack_body, read_body, seal_body, write_sealed

ARRAYS = ("group_gram", "group_targets", "group_samples")
META_KEYS = {"bundle_id", "kind", "method", "groups"}
INT64 = (-(1 << 63), (1 << 63) - 1)
SYMMETRY_TOL = 1e-9          # |gram - gram^T| relative to the largest entry


@dataclass
class RegressionState:
    """Per-group statistics (``gram [G, P, P]``, ``targets [G, P, O]`` float64, ``samples [G]`` int64) and head."""

    bundle_id: str
    method: str
    groups: list[Any]
    gram: np.ndarray
    targets: np.ndarray
    samples: np.ndarray
    head: dict[str, np.ndarray]


def encode_regression_state(state: RegressionState, key: bytes | None = None) -> bytes:
    """The state file's bytes (encrypted with ``key``, 32 bytes, if given)."""
    arrays = [("group_gram", np.ascontiguousarray(state.gram, "<f8")),
              ("group_targets", np.ascontiguousarray(state.targets, "<f8")),
              ("group_samples", np.ascontiguousarray(state.samples, "<i8"))]
    arrays += [(f"head.{k}", np.ascontiguousarray(v, "<f4")) for k, v in sorted(state.head.items())]
    meta = {"bundle_id": state.bundle_id, "kind": "regression", "method": state.method, "groups": list(state.groups)}
    return seal_body(pack_body(arrays, meta), key)


def write_regression_state(path: str | os.PathLike, state: RegressionState, key: bytes | None = None) -> None:
    """Atomic, mode 0600 (as the classifier's state)."""
    write_sealed(path, encode_regression_state(state, key))


def _groups(groups: Any, source: str) -> list[Any]:
    ok_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and INT64[0] <= v <= INT64[1]
    if not isinstance(groups, list) or not (all(isinstance(v, str) for v in groups) or all(map(ok_int, groups))):
        raise StateError(f"{source}: groups must be a list of all strings or all 64-bit integers")
    if len(set(groups)) != len(groups):
        raise StateError(f"{source}: groups repeat a name; expected each group once")
    return groups


def read_regression_state(path: str | os.PathLike, dim: int, outputs: int, bundle_id: str,
                          key: bytes | None = None) -> RegressionState:
    """Read and check a regression state for a bundle with ``dim``-wide embeddings (P) and ``outputs`` (O)."""
    source = str(path)
    arrays, meta = read_body(path, key)
    if not isinstance(meta, dict) or set(meta) != META_KEYS or meta.get("kind") != "regression":
        raise StateError(f"{source} is not a regression state (meta keys {sorted(meta) if isinstance(meta, dict) else meta!r}; "
                         f"expected {sorted(META_KEYS)} with kind 'regression'); a classifier state loads with "
                         f"FewShotClassifier.load")
    if not isinstance(meta["bundle_id"], str) or not re.fullmatch(r"[0-9a-f]{64}", meta["bundle_id"]):
        raise StateError(f"{source}: bundle_id is not a bundle's 64-hex-digit manifest sha256")
    if meta["bundle_id"] != bundle_id:
        raise StateError(f"{source} was saved with another bundle; adapt again with this bundle")
    if not (isinstance(meta["method"], str) and 0 < len(meta["method"]) <= 64):
        raise StateError(f"{source}: method must be a short string")
    groups = _groups(meta["groups"], source)
    unknown = [n for n in arrays if n not in ARRAYS and not n.startswith("head.")]
    if unknown:
        raise StateError(f"{source}: unknown arrays {unknown}; a regression state holds {list(ARRAYS)} and head.<name>")
    g, t, n = (arrays.get(k) for k in ARRAYS)
    G = len(groups)
    for name, a, dtype, shape in (("group_gram", g, np.float64, (G, dim, dim)),
                                  ("group_targets", t, np.float64, (G, dim, outputs)),
                                  ("group_samples", n, np.int64, (G,))):
        if a is None or a.dtype != dtype or a.shape != shape:
            got = "missing" if a is None else f"{a.dtype} {list(a.shape)}"
            raise StateError(f"{source}: {name} is {got}; expected {np.dtype(dtype).name} {list(shape)} for "
                             f"{G} groups of this bundle")
    if not (np.isfinite(g).all() and np.isfinite(t).all()):
        raise StateError(f"{source}: statistics hold NaN or infinity; expected finite sums")
    if G and (n.min() < 1 or not np.array_equal(g[:, -1, -1], n.astype(np.float64))):
        raise StateError(f"{source}: group_samples must be >= 1 and equal each gram's count entry")
    scale = max(1.0, float(np.abs(g).max())) if G else 1.0
    if G and (np.abs(g - g.transpose(0, 2, 1)).max() > SYMMETRY_TOL * scale or (np.diagonal(g, 0, 1, 2) < 0).any()):
        raise StateError(f"{source}: group_gram is not symmetric with a non-negative diagonal; expected sums of "
                         f"phi^T phi")
    head = {}
    for name, v in arrays.items():
        if name.startswith("head."):
            if v.dtype != np.float32 or not np.isfinite(v).all():
                raise StateError(f"{source}: {name} must be finite float32")
            head[name[5:]] = v
    return RegressionState(meta["bundle_id"], meta["method"], groups, g, t, n, head)
