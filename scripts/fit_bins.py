"""Fit state bin edges for the highest state ceiling: ``autoscale fit-bins`` (see its --help)."""

import sys

from agents.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["fit-bins", *sys.argv[1:]]))
