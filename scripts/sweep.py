"""Thin wrapper: `python scripts/sweep.py ...` is `autoscale sweep ...`."""

from agents.sweep import main

raise SystemExit(main())
