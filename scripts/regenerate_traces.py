"""Regenerate the bundled sim traces from the current sim (``--check``: only compare).

Run from the repository root: ``python scripts/regenerate_traces.py``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without installing

from autoscale_env.tools.bundled_traces import main  # noqa: E402

raise SystemExit(main())
