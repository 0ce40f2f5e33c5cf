"""Fit a device profile from full traces: ``autoscale calibrate`` as a script."""
from autoscale_env.tools.calibrate import main

raise SystemExit(main())
