"""Checkpoints without pickle: weights as ``.npz`` (``allow_pickle=False``), metadata as JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgemeta.contract.atomic_files import atomic_write_bytes


def save_weights(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    """Write a state dict as ``.npz`` atomically."""
    buf = io.BytesIO()
    np.savez(buf, **{k: v.detach().cpu().numpy() for k, v in state.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    with np.load(path, allow_pickle=False) as z:
        return {k: torch.from_numpy(z[k].copy()) for k in z.files}


def save_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
