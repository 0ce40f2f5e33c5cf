"""Thin wrapper: `python scripts/sensitivity.py ...` is `autoscale sensitivity ...`."""

from agents.experiments.sensitivity import main

raise SystemExit(main())
