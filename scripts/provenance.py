"""Count the world's sourced vs estimated numbers: ``autoscale provenance`` (see its --help)."""

import sys

from agents.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["provenance", *sys.argv[1:]]))
