"""Atomic file writes: a reader sees the old file or the new one, never a mix (stdlib only).

Each write goes through a temporary ``.<name>.edgemeta-tmp-<16 hex>`` beside the target, created
with ``O_EXCL`` and held under an exclusive advisory lock (``flock``) from creation until after the
rename. A temporary whose lock can be taken therefore belongs to no live writer: its writer died
(crash, SIGKILL, power loss) before renaming it. :func:`remove_stale_temporaries` deletes only
those, and only the target's own (the pattern cannot match a sibling's, e.g. ``me.state.bak``'s).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, stale temporaries are kept
    fcntl = None  # type: ignore[assignment]

_TMP_TAG = ".edgemeta-tmp-"
_TMP_HEX = 16
NAME_MAX = 255                                          # bytes in one file name on common file systems
TEMPORARY_EXTRA_BYTES = 1 + len(_TMP_TAG) + _TMP_HEX     # a temporary's name is this much longer than its target's


def _temporary_pattern(name: str) -> re.Pattern[str]:
    """Names of ``name``'s temporaries only: a fixed-length hex suffix after the exact name."""
    return re.compile(re.escape(f".{name}{_TMP_TAG}") + f"[0-9a-f]{{{_TMP_HEX}}}")


def _lock(fd: int, block: bool) -> bool:
    """Exclusive flock on ``fd``; without ``block``, False when another process holds it."""
    if fcntl is None:  # pragma: no cover - Windows: nothing to wait for, nothing provably dead
        return block
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _create_locked_temporary(path: Path, mode: int) -> tuple[int, Path]:
    """A new temporary beside ``path``, open for writing and locked by this process."""
    while True:
        tmp = path.parent / f".{path.name}{_TMP_TAG}{secrets.token_hex(_TMP_HEX // 2)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        except FileExistsError:
            continue
        _lock(fd, block=True)
        # Between O_EXCL and flock a cleaner may have locked and deleted it: then start over.
        if _same_file(fd, tmp):
            return fd, tmp
        os.close(fd)


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (so nothing can be written
    at ``path``), else None."""
    for parent in Path(path).parents:
        if os.path.lexists(parent):
            return None if os.path.isdir(parent) else parent
    return None


def _restated(exc: OSError, path: Path) -> OSError:
    """``exc`` (raised for the folder, the temporary or the rename) restated for the target ``path``:
    same class and errno, ``filename`` the target, ``strerror`` what went wrong and what was expected."""
    folder = path.parent
    blocker = file_in_the_way(path)
    name_bytes = len(os.fsencode(path.name))
    if blocker is not None:
        why = f"{blocker} is a file, not a folder; expected a folder (or a path where one can be created)"
    elif os.path.isdir(path):
        why = "this is a folder; expected a file path"
    elif exc.errno == errno.ENAMETOOLONG and name_bytes > NAME_MAX - TEMPORARY_EXTRA_BYTES:
        why = (f"the file name is {name_bytes} bytes; expected at most {NAME_MAX - TEMPORARY_EXTRA_BYTES} "
               f"(a temporary '.<name>{_TMP_TAG}<{_TMP_HEX} hex>' is written beside it first)")
    elif exc.errno == errno.ENAMETOOLONG:
        why = f"the path is too long ({exc.strerror}); expected a shorter path"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = f"permission denied in the folder {folder}; expected a folder this user can write"
    elif exc.errno == errno.EROFS:
        why = f"the folder {folder} is on a read-only file system; expected a writable folder"
    elif exc.errno == errno.ENOSPC:
        why = "no space left on the device"
    else:
        why = f"cannot write a file in the folder {folder} ({exc.strerror}); expected a folder where files can be written"
    return type(exc)(exc.errno, why, str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    ``mode``: the new file's permissions (set before any byte is written). Safe against other
    processes writing the same path or its siblings at the same time: the last rename wins. A path
    that is a symbolic link is written through: its target is replaced, the link stays. A failure is
    an OSError of the usual class whose ``filename`` is ``path`` (never the temporary) and whose
    ``strerror`` says what was expected.
    """
    path = Path(path)
    try:
        if path.is_symlink():
            path = Path(os.path.realpath(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_locked_temporary(path, mode)
    except OSError as exc:
        raise _restated(exc, path) from None
    try:
        os.fchmod(fd, mode)                       # exact mode, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _restated(exc, path) from None
        raise
    finally:
        os.close(fd)                              # releases the lock only after the rename


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporaries of ``path`` that crashed :func:`atomic_write_bytes` calls left behind.

    Only a temporary this process can lock is deleted (its writer is dead); those of live writers,
    and every other file in the folder, are left alone. Returns the deleted paths.
    """
    path = Path(path)
    if path.is_symlink():                         # temporaries sit beside the link's target
        path = Path(os.path.realpath(path))
    pattern = _temporary_pattern(path.name)
    removed = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return removed
    for name in names:
        if not pattern.fullmatch(name):
            continue
        tmp = path.parent / name
        try:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue                              # renamed or removed meanwhile
        try:
            if _lock(fd, block=False) and _same_file(fd, tmp):
                os.unlink(tmp)
                removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
