"""The CLI's one error path: every failure a user can cause becomes ``error: <message>`` on stderr
and exit status 2, never a traceback.

What is reported this way: :class:`~edgemeta.errors.EdgemetaError` (everything edgemeta refuses),
``ValueError`` (argument checks of the library that predate that hierarchy), ``OSError`` (a file
or folder that is missing, unreadable or of the wrong kind; the message names the path), a missing
optional package (the message names the ``pip install`` line), a truncated file (``EOFError``) and
Ctrl-C (exit status 130). Set ``EDGEMETA_TRACEBACK=1`` to get the traceback instead.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import typer
from typer.core import TyperGroup

from edgemeta.errors import EdgemetaError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
TRAIN_EXTRA = "pip install torch==2.13.0 && pip install 'edgemeta[train]'"
# top-level module -> (what needs it, how to install it)
OPTIONAL_PACKAGES: dict[str, tuple[str, str]] = {
    "torch": ("meta-training and export (the workstation side)", TRAIN_EXTRA),
    "onnx": ("export", TRAIN_EXTRA),
    "tqdm": ("meta-training", TRAIN_EXTRA),
    "sklearn": ("the demo (its handwritten digits)", "pip install 'edgemeta[demo]'"),
    "matplotlib": ("the demo's figure (or pass --no-figure)", "pip install 'edgemeta[demo]'"),
    "cryptography": ("an encrypted state (--key-env)", "pip install 'edgemeta[crypto]'"),
}


def describe_os_error(exc: OSError) -> str:
    """A one-line message for a file problem that names the path (``exc.filename``) when known."""
    path = exc.filename
    if path is None:
        return str(exc)
    if exc.errno is not None and exc.strerror and exc.strerror != os.strerror(exc.errno):
        return f"{path}: {exc.strerror}"             # edgemeta's own explanation (e.g. an atomic write's)
    if isinstance(exc, FileNotFoundError):
        return f"{path}: no such file or folder"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder; a file was expected here"
    if isinstance(exc, NotADirectoryError):
        return f"{path}: a folder was expected, but a part of this path is a file"
    if isinstance(exc, PermissionError):
        return f"{path}: permission denied"
    if exc.errno == errno.ENOSPC:
        return f"{path}: no space left on the device"
    return f"{path}: {exc.strerror or exc}"


def describe_missing_module(exc: ModuleNotFoundError) -> str:
    """Which optional package is missing, what needs it and the install line."""
    top = (exc.name or "").split(".")[0]
    if top in OPTIONAL_PACKAGES:
        needed_by, install = OPTIONAL_PACKAGES[top]
        return f"{needed_by} needs the '{top}' package, which is not installed here: {install}"
    return f"{exc} (a package edgemeta needs is missing; reinstall edgemeta: pip install -e .)"


def error_message(exc: BaseException) -> str | None:
    """The message the CLI prints for ``exc``, or ``None`` when ``exc`` is not a user-facing failure."""
    if isinstance(exc, ModuleNotFoundError):
        return describe_missing_module(exc)
    if isinstance(exc, (EdgemetaError, ValueError)):
        return str(exc)
    if isinstance(exc, OSError):
        # a closed pipe (`edgemeta predict ... | head`) is left to typer, which exits quietly
        return None if exc.errno == errno.EPIPE else describe_os_error(exc)
    if isinstance(exc, EOFError):
        return f"a file ended early (truncated or still being written?): {exc}"
    return None


def fail(message: str) -> None:
    """Print ``error: message`` on stderr and exit with status 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_ERROR)


class ReportingGroup(TyperGroup):
    """The ``edgemeta`` command group: runs a sub-command and turns its failures into one-line errors."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            typer.secho("error: interrupted", fg=typer.colors.RED, err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:                      # noqa: BLE001 - typer's own exits pass: message is None
            message = error_message(exc)
            if message is None or os.environ.get("EDGEMETA_TRACEBACK"):
                raise
            fail(message)
