"""``python scripts/regenerate_traces.py ARGS`` is ``autoscale regenerate-traces ARGS``; options:
``autoscale regenerate-traces --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["regenerate-traces", *sys.argv[1:]]))
