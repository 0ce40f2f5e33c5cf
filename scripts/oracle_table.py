"""``python scripts/oracle_table.py ARGS`` is ``autoscale oracle-table ARGS``; options:
``autoscale oracle-table --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["oracle-table", *sys.argv[1:]]))
