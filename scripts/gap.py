"""Sim-to-real gap of a profile against a trace: ``autoscale gap`` as a script."""
from agents.gap import main

raise SystemExit(main())
