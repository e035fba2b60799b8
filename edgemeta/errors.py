"""The project's errors: every failure edgemeta reports is an :class:`EdgemetaError`.

One base class lets an app (and the CLI) catch everything edgemeta refuses in one place::

    EdgemetaError
    ├── BundleError      a bundle is missing, malformed, of another format version, or altered
    ├── InputError       images, labels or arguments are not what the bundle expects
    │   └── DataNotFoundError   a data set (Omniglot) is not where it was looked for
    ├── StateError       a private state file is missing, damaged, altered or of another bundle
    ├── ExportError      a run cannot be exported (a gate failed, the run is incomplete)
    └── NotFittedError   the classifier is used before ``fit`` (scikit-learn's convention)

Each subclass also derives from the built-in exception callers caught before this hierarchy
existed (``ValueError``; ``RuntimeError`` for export), so older ``except`` clauses keep working.
"""

from __future__ import annotations


class EdgemetaError(Exception):
    """Base of every error edgemeta raises on purpose; the message says what was expected."""


class BundleError(EdgemetaError, ValueError):
    """A bundle is missing, malformed, of another format version, or altered."""


class InputError(EdgemetaError, ValueError):
    """Input images, labels or arguments are not what the bundle expects; the message says what was."""


class DataNotFoundError(InputError, FileNotFoundError):
    """A data set is not where it was looked for; the message lists the places and how to point at it.
    Also a ``FileNotFoundError``, which callers caught before it existed."""


class StateError(EdgemetaError, ValueError):
    """A private state file is missing, damaged, altered, encrypted with another key or of another bundle."""


class ExportError(EdgemetaError, RuntimeError):
    """A training run cannot be exported as a bundle (a gate failed or the run is incomplete)."""


class NotFittedError(EdgemetaError, ValueError, AttributeError):
    """The classifier was used before ``fit``; like scikit-learn's, it is a ValueError and AttributeError."""
