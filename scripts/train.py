"""Thin wrapper: `python scripts/train.py ...` is `autoscale train ...`."""

import sys

from agents.cli import main

raise SystemExit(main(["train", *sys.argv[1:]]))
