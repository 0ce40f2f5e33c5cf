"""``python scripts/sample_efficiency.py ARGS`` is ``autoscale sample-efficiency ARGS``; options:
``autoscale sample-efficiency --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["sample-efficiency", *sys.argv[1:]]))
