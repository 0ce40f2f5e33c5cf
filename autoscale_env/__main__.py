"""``python -m autoscale_env``: the ``autoscale`` command line when the agents are installed
(the same package ships them), else a short usage of the environment."""

from __future__ import annotations

import sys

USAGE = """\
autoscale-env: AutoScale (Kim & Wu, 2020) as the Gymnasium environment AutoScale-v0.

    import gymnasium as gym, autoscale_env
    env = gym.make("AutoScale-v0", device="mi8pro", scenario="non_streaming", setting="dynamic")

Command line: autoscale --help (or python -m agents.cli --help).
"""


def main(argv: list[str] | None = None) -> int:
    """Run ``agents.cli`` with ``argv``; without arguments (or without the agents) print the
    usage above."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from agents.cli import main as cli_main
    except ImportError:
        cli_main = None
    if cli_main is None or not argv:
        print(USAGE, end="")
        return 0
    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
