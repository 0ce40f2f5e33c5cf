"""``python scripts/train.py ARGS`` is ``autoscale train ARGS``; options:
``autoscale train --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["train", *sys.argv[1:]]))
