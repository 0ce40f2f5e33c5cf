"""``python scripts/plot.py ARGS`` is ``autoscale plot ARGS``; options:
``autoscale plot --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["plot", *sys.argv[1:]]))
