"""Geometric-mean comparison of agents over a benchmark's cells (agents.comparison).

    python scripts/comparison_table.py runs/grid/results.csv --agents qlearning,linucb,random
"""

import argparse
import csv

from agents.comparison import geomean_table

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("results", help="a benchmark's results.csv")
parser.add_argument("--agents", default="", help="comma-separated agents, in table order (default: all)")
args = parser.parse_args()
with open(args.results, newline="") as f:
    rows = list(csv.DictReader(f))
agents = [a for a in args.agents.split(",") if a] or None
if agents:
    rows = [r for r in rows if r["agent"] in agents]
print(geomean_table(rows, agents), end="")
