"""``python scripts/paper_table.py ARGS`` is ``autoscale paper-table ARGS``; options:
``autoscale paper-table --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["paper-table", *sys.argv[1:]]))
