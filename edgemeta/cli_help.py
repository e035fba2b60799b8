"""Plain help text for the CLI: ``Usage: edgemeta predict [OPTIONS] BUNDLE IMAGES...``.

typer writes required arguments as ``{bundle}`` on the usage line, a type column such as
``<list[Path]>`` beside named arguments, and ``<bool>`` beside every flag. :class:`PlainCommand`
shows an argument's metavar alone (the help says what it is) and nothing beside flags.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperOption

_BRACED = re.compile(r"\{([^{}]*)\}")


class NamedArgument(TyperArgument):
    """An argument shown by its metavar (``BUNDLE``) with no type column."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None if self.metavar else super().display_type_rich(ctx)


class PlainCommand(TyperCommand):
    """A command whose usage line reads ``BUNDLE IMAGES...`` and whose flags carry no ``<bool>``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument and param.metavar:
                param.__class__ = NamedArgument
            elif isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [_BRACED.sub(r"\1", piece) for piece in super().collect_usage_pieces(ctx)]

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option
