"""Thin wrapper: `python scripts/sensitivity.py ...` is `autoscale sensitivity ...`."""

from agents.sensitivity import main

raise SystemExit(main())
