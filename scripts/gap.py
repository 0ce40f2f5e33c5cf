"""Sim-to-real gap of a profile against a trace: ``autoscale gap`` as a script."""
from agents.experiments.gap import main

raise SystemExit(main())
