"""``python scripts/live_report.py ARGS`` is ``autoscale live-report ARGS``; options:
``autoscale live-report --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["live-report", *sys.argv[1:]]))
