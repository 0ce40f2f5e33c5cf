"""``python scripts/benchmark.py ARGS`` is ``autoscale benchmark ARGS``; options:
``autoscale benchmark --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a source checkout, not installed
from agents.cli import main  # noqa: E402

raise SystemExit(main(["benchmark", *sys.argv[1:]]))
