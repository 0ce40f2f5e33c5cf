"""The ``autoscale`` command line: every command, one app (typer), at the top of the house.

``main(argv)`` runs a command and returns its exit code, so the console script, ``python -m
agents.cli``, ``python -m autoscale_env`` and the wrappers in ``scripts/`` all go through it. The
commands (:mod:`agents.cli.experiments`: the agents and their experiments;
:mod:`agents.cli.world`: traces, servers and the world's tools) call the library functions of
their modules; exit codes are listed in :mod:`agents.cli.app`.
"""

import sys

import typer

from agents.cli import experiments, world  # noqa: F401  (each registers its commands)
from agents.cli.app import app, set_invocation

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``autoscale`` with ``argv`` (default: the process's arguments); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    set_invocation(argv)
    try:
        return int(app(args=argv, prog_name="autoscale", standalone_mode=False) or 0)
    except typer.Abort:
        print("autoscale: aborted", file=sys.stderr)
        return 1
    except typer.TyperException as e:  # a usage error: the usage line, the error, exit 2
        e.show()
        return int(getattr(e, "exit_code", 2))
