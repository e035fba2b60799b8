"""Checkpoints to resume a run exactly: weights, optimizer and scheduler state, RNG, position.

Written atomically to ``last.npz`` (arrays) and ``last.json`` (everything else), no pickle. A run
killed at any moment resumes from its last checkpoint and, since episode ``i`` is a pure function of
``(seed, i)``, replays exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgemeta.contract.atomic_files import atomic_write_bytes


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    sd = opt.state_dict()
    arrays, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                arrays[f"opt/{idx}/{k}"] = v.detach().cpu().numpy()
            else:
                scalars[f"{idx}/{k}"] = v
    return arrays, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(opt: torch.optim.Optimizer, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, arr in arrays.items():
        _, idx, k = key.split("/", 2)
        state.setdefault(int(idx), {})[k] = torch.from_numpy(arr.copy())
    for key, v in meta["scalars"].items():
        idx, k = key.split("/", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run_dir: Path, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer,
                    sched: Any, gen: torch.Generator, position: dict[str, Any]) -> None:
    """``last.npz`` + ``last.json``; the JSON is written last and names the arrays' sha-free size."""
    arrays: dict[str, np.ndarray] = {}
    for name, m in modules.items():
        arrays.update({f"{name}/{k}": v.detach().cpu().numpy() for k, v in m.state_dict().items()})
    opt_arrays, opt_meta = _flatten_optimizer(opt)
    arrays.update(opt_arrays)
    arrays["rng/generator"] = gen.get_state().cpu().numpy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    atomic_write_bytes(run_dir / "last.npz", data)
    meta = {"position": position, "optimizer": opt_meta, "scheduler": sched.state_dict(), "npz_bytes": len(data)}
    atomic_write_bytes(run_dir / "last.json", (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())


def load_checkpoint(run_dir: Path, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer, sched: Any,
                    gen: torch.Generator) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; returns the saved position."""
    meta = json.loads((run_dir / "last.json").read_text())
    data = (run_dir / "last.npz").read_bytes()
    if len(data) != meta["npz_bytes"]:
        raise ValueError(f"{run_dir}/last.npz does not match last.json (size {len(data)} != {meta['npz_bytes']})")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for name, m in modules.items():
        prefix = f"{name}/"
        m.load_state_dict({k[len(prefix):]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith(prefix)})
    _unflatten_optimizer(opt, {k: v for k, v in arrays.items() if k.startswith("opt/")}, meta["optimizer"])
    sched.load_state_dict(meta["scheduler"])
    gen.set_state(torch.from_numpy(arrays["rng/generator"].copy()))
    return meta["position"]


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "last.json").is_file() and (run_dir / "last.npz").is_file()
