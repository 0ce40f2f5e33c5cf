"""``python scripts/fit_bins.py ARGS`` is ``autoscale fit-bins ARGS``; options:
``autoscale fit-bins --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["fit-bins", *sys.argv[1:]]))
