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
from edgemeta.contract.manifest_schema import GRAPH_FILES
from edgemeta.contract.preprocess import colour_spec, default_spec
from edgemeta.errors import ExportError

LIMITS = {"min_ways": 2, "max_ways": 1000, "min_shots": 1}


def build_manifest(*, method: str, image_size: tuple[int, int], embedding_dim: int, head_outputs: Sequence[str],
                   head_hparams: Mapping[str, Any], provenance: Mapping[str, Any], parity: Mapping[str, Any],
                   onnx_opset: int, torch_version: str,
                   shift_views: Sequence[Sequence[int]] = ((0, 0),), channels: int = 1) -> dict[str, Any]:
    """The manifest of a bundle whose backbone takes ``images [N, channels, H, W]`` (``image_size = (H, W)``)
    and outputs ``embeddings [N, embedding_dim]``, averaged over ``shift_views`` ``(dy, dx)`` shifts.

    ``channels``: 1 (grey, nearest resize, ink) or 3 (RGB photos: centre crop, ``box_int`` resize; the
    backbone normalises inside its graph). ``provenance``: what the caller knows of the model (run
    config, seed, ...); the exporter's version, toolchain, time and platform are added here.
    """
    if channels not in (1, 3):
        raise ExportError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    size = (int(image_size[0]), int(image_size[1]))
    spec = default_spec(size, "nearest") if channels == 1 else colour_spec(size)
    batch = None if channels == 1 else -1        # as docs/bundle-format.md writes each kind
    return {
        "method": method,
        "input": {"name": "images", "shape": [batch, channels, *size], "dtype": "float32", "range": [0.0, 1.0]},
        "preprocess": spec,
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
