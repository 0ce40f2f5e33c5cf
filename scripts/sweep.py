"""Thin wrapper: `python scripts/sweep.py ...` is `autoscale sweep ...`."""

from agents.experiments.sweep import main

raise SystemExit(main())
