"""Remake a benchmark's or sweep's figures from its results files alone.

    python scripts/plot.py runs/bench [runs/other ...]

Reads results.csv, curves.csv and per_network.csv in each directory and writes
oracle_match_vs_steps.png, energy_vs_steps.png and efficiency_per_network.png beside them
(see ``agents.experiments.figures``; needs the [plots] extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.experiments.figures import read_table, write_figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path,
                        help="output directories of autoscale benchmark / sweep")
    args = parser.parse_args(argv)
    for run in args.runs:
        if not read_table(run, "results"):
            print(f"plot.py: error: {run / 'results.csv'} is missing or empty", file=sys.stderr)
            return 2
        written = write_figures(run)
        if not written:
            print("plot.py: error: no figure written (is matplotlib installed? pip install -c "
                  "constraints.txt 'autoscale-env[plots]')", file=sys.stderr)
            return 2
        for path in written:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
