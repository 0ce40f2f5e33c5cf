"""Thin wrapper: `python scripts/fleet_benchmark.py ...` is `autoscale fleet-benchmark ...`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from agents.experiments.fleet_benchmark import main  # noqa: E402

raise SystemExit(main())
