"""The ``edgemeta`` typer app that both command modules register on, and the argument helpers they share.

:mod:`edgemeta.cli_workstation` and :mod:`edgemeta.cli_device` add their commands with :func:`command`;
:mod:`edgemeta.cli` imports both and is the entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer

from edgemeta.cli_errors import ReportingGroup
from edgemeta.cli_help import PlainCommand
from edgemeta.errors import InputError

app = typer.Typer(cls=ReportingGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Meta-train on a workstation, adapt on the device. See README.md.")


def command(name: Optional[str] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@app.command`` with plain metavars in its help."""
    return app.command(name, cls=PlainCommand)


def given_path(text: str | Path) -> Path:
    """A path argument as typed; an empty one (which ``Path`` would read as ``.``) is refused."""
    if isinstance(text, Path):
        return text
    if text == "":
        raise InputError("an empty path was given; expected a file or folder path ('.' for the current folder)")
    return Path(text)


BUNDLE_HELP = "Bundle folder or .zip."
