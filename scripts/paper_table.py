"""Thin wrapper: `python scripts/paper_table.py OUT_DIR` prints the README's "Paper versus this
world" table from a benchmark/sweep output directory."""

from agents.experiments.paper_table import main

raise SystemExit(main())
