"""``python scripts/comparison_table.py ARGS`` is ``autoscale comparison-table ARGS``; options:
``autoscale comparison-table --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["comparison-table", *sys.argv[1:]]))
