"""Atomic file writes: a reader sees the old file or the new one, never a mix (stdlib only)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    The temporary file is ``.<name>.<random>`` in the same folder; a crash can leave one behind,
    which :func:`remove_stale_temporaries` clears.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete ``.<name>.*`` files beside ``path``: what crashed :func:`atomic_write_bytes` calls left."""
    path = Path(path)
    for p in path.parent.glob(f".{path.name}.*"):
        try:
            p.unlink()
        except OSError:
            pass
