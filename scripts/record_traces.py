"""``python scripts/record_traces.py ARGS`` is ``autoscale record ARGS``; options:
``autoscale record --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["record", *sys.argv[1:]]))
