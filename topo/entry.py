"""The ``topo`` command's entry point (``python -m topo`` too).

A ``topo run`` command line that typer parsed before, with this topo and this typer,
runs from what typer made of it (``console.run_remembered``), without importing typer;
any other command line is typer's (``topo.cli``). Either way topo leaves as
``console.leave_after`` says.
"""

from __future__ import annotations

import sys

from topo.console import leave_after, run_remembered


def main() -> None:
    argv = sys.argv[1:]

    def command() -> None:
        if argv[:1] == ["run"]:
            run_remembered(argv)  # returns only when there is nothing remembered
        from topo.cli import app

        app()

    leave_after(command)
