"""The ``edgemeta`` command line: train, export, eval, inspect, bench, adapt, predict, forget, demo.

The app and its shared argument helpers live in :mod:`edgemeta.cli_app`; the commands in
:mod:`edgemeta.cli_workstation` (train, export, eval, inspect, bench) and :mod:`edgemeta.cli_device`
(adapt, predict, forget, demo), registered on the app when imported here, in that order.
Every failure a user can cause ends as ``error: <message>`` on stderr with exit status 2
(:mod:`edgemeta.cli_errors`); help shows plain metavars (:mod:`edgemeta.cli_help`).
"""

from __future__ import annotations

# isort: off
# importing a command module registers its commands; help lists them in import order, so keep this order
import edgemeta.cli_workstation  # train, export, eval, inspect, bench
import edgemeta.cli_device  # noqa: F401  adapt, predict, forget, demo
from edgemeta.cli_app import app
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """The ``edgemeta`` console script."""
    app()


if __name__ == "__main__":
    main()
