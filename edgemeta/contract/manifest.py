"""The bundle manifest, built in one place (torch-free: plain data, usable by tools and tests).

``build_manifest`` lays out every field ``docs/bundle-format.md`` describes except those that
only a finished export knows (``validation``, ``precision``, ``open_set``, filled in afterwards)
and those ``contract.bundle.seal_manifest`` completes (``format``, ``files``, ``integrity``).
"""

from __future__ import annotations

import datetime as _dt
import platform
from typing import Any, Mapping, Sequence

from edgemeta import __version__
from edgemeta.contract.bundle import GRAPH_FILES
from edgemeta.contract.preprocess import default_spec

LIMITS = {"min_ways": 2, "max_ways": 1000, "min_shots": 1}


def build_manifest(*, method: str, image_size: tuple[int, int], embedding_dim: int, head_outputs: Sequence[str],
                   head_hparams: Mapping[str, Any], provenance: Mapping[str, Any], parity: Mapping[str, Any],
                   onnx_opset: int, torch_version: str,
                   shift_views: Sequence[Sequence[int]] = ((0, 0),)) -> dict[str, Any]:
    """The manifest of a bundle whose backbone takes ``images [N, 1, H, W]`` (``image_size = (H, W)``)
    and outputs ``embeddings [N, embedding_dim]``, averaged over ``shift_views`` ``(dy, dx)`` shifts.

    ``provenance``: what the caller knows of the model (run config, seed, ...); the exporter's
    version, toolchain, time and platform are added here.
    """
    image_shape = [1, *image_size]
    return {
        "method": method,
        "input": {"name": "images", "shape": [None, *image_shape], "dtype": "float32", "range": [0.0, 1.0]},
        "preprocess": default_spec(tuple(image_size), "nearest"),
        "embedding": {"name": "embeddings", "dim": int(embedding_dim), "shift_views": [list(v) for v in shift_views]},
        "head": {"method": method, "outputs": list(head_outputs), **head_hparams},
        "graphs": dict(GRAPH_FILES),
        "limits": dict(LIMITS),
        "provenance": {
            **provenance, "code_version": __version__, "torch": torch_version, "onnx_opset": onnx_opset,
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform.platform(),
        },
        "parity": dict(parity),
        "validation": {},
        "integrity": {},
    }
