"""``python scripts/drift.py ARGS`` is ``autoscale drift ARGS``; options:
``autoscale drift --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["drift", *sys.argv[1:]]))
