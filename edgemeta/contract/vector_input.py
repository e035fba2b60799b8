"""Vector inputs ``[N, D]`` (sensor features, tabular readings): the manifest's ``vector_input`` section
and the checks every runtime applies before a vector reaches ``backbone.onnx`` (numpy only).

The normalisation lives inside ``backbone.onnx`` (``vector_input.normalization`` is ``in_graph``): a
runtime feeds the raw values, as float32, after :func:`check_vectors`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from edgemeta.errors import InputError

INPUT_NAME = "inputs"                    # backbone.onnx's input in a vector bundle
FLOAT32_MAX = 3.0e38                     # larger magnitudes overflow float32 (max 3.4028e38)
MAX_ROWS = 10_000_000                    # one call's rows (memory bound: 40 MB per float32 column)


def is_vector_bundle(manifest: Mapping[str, Any]) -> bool:
    """Whether the manifest's backbone takes vectors ``[N, D]`` (the ``vector_input`` section) instead of images."""
    return "vector_input" in manifest


def vector_dim(manifest: Mapping[str, Any]) -> int:
    """``D``, the width of each input vector."""
    return int(manifest["vector_input"]["dim"])


def _first_bad_row(bad: np.ndarray) -> int:
    return int(np.argwhere(bad.reshape(len(bad), -1).any(1))[0, 0])


def check_vectors(x: Any, dim: int, what: str = "inputs", allow_empty: bool = False) -> np.ndarray:
    """``x`` as float32 ``[N, dim]``: a 2-D array (or nested list) of real numbers, finite, each of
    magnitude at most :data:`FLOAT32_MAX`. Raises :class:`InputError` naming the shape, dtype or row."""
    if x is None or isinstance(x, (str, bytes, dict, set)) or np.isscalar(x):
        raise InputError(f"{what} is {type(x).__name__}; expected a 2-D array [N, {dim}] of numbers "
                         f"(one row per sample)")
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError):
            raise InputError(f"{what} are a ragged nested sequence; expected {dim} numbers in every row") from None
    if x.dtype.kind not in "iuf":
        kind = "booleans" if x.dtype.kind == "b" else f"dtype {x.dtype}"
        raise InputError(f"{what} hold {kind}; expected real numbers (int or float) in a [N, {dim}] array")
    if x.ndim != 2:
        hint = " (one sample: x.reshape(1, -1); one feature: x.reshape(-1, 1))" if x.ndim == 1 else ""
        raise InputError(f"{what} have shape {list(x.shape)}; expected a 2-D array [N, {dim}]{hint}")
    if x.shape[1] != dim:
        raise InputError(f"{what} have {x.shape[1]} columns; this bundle takes {dim} numbers per row")
    if len(x) == 0 and not allow_empty:
        raise InputError(f"{what} have no rows; expected at least one sample")
    if len(x) > MAX_ROWS:
        raise InputError(f"{what} have {len(x)} rows; at most {MAX_ROWS} per call (pass them in parts)")
    if x.dtype.kind == "f":
        finite = np.isfinite(x)
        if not finite.all():
            raise InputError(f"{what} row {_first_bad_row(~finite)} holds NaN or infinity; expected finite numbers")
    big = np.abs(x.astype(np.float64, copy=False)) > FLOAT32_MAX
    if big.any():
        raise InputError(f"{what} row {_first_bad_row(big)} holds a value beyond ±{FLOAT32_MAX:g}; expected "
                         f"numbers that fit float32")
    return np.ascontiguousarray(x, np.float32)


def vector_chunks(x: Any, dim: int, what: str = "inputs", chunk: int = 4096) -> tuple[int, Iterator[np.ndarray]]:
    """``(N, chunks)``: ``x`` checked now (:func:`check_vectors`), then float32 ``[n, dim]`` chunks of at most
    ``chunk`` rows, in order (what a vector-input classifier feeds its backbone)."""
    v = check_vectors(x, dim, what)
    return len(v), (v[i:i + chunk] for i in range(0, len(v), chunk))
