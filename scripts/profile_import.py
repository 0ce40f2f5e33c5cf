"""``python scripts/profile_import.py ARGS`` is ``autoscale profile import ARGS``; options:
``autoscale profile import --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["profile", "import", *sys.argv[1:]]))
