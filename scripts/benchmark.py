"""Thin wrapper: `python scripts/benchmark.py ...` is `autoscale benchmark ...`."""

import sys

from agents.cli import main

raise SystemExit(main(["benchmark", *sys.argv[1:]]))
