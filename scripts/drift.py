"""Thin wrapper: `python scripts/drift.py ...` is `autoscale drift ...`."""

import sys

from agents.cli import main

raise SystemExit(main(["drift", *sys.argv[1:]]))
