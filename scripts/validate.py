"""Thin wrapper: `python scripts/validate.py ...` is `autoscale validate ...`."""

from autoscale_env.tools.validate import main

raise SystemExit(main())
