"""Geometric-mean comparison of agents over a benchmark's cells (agents.experiments.comparison).

    python scripts/comparison_table.py runs/grid/results.csv --agents qlearning,linucb,random
"""

import argparse
import csv

from agents.experiments.comparison import geomean_table

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("results", help="a benchmark's results.csv")
parser.add_argument("--agents", default="", help="comma-separated agents, in table order (default: all)")
parser.add_argument("--scenario", default="", help="only the cells of this scenario")
parser.add_argument("--setting", default="", help="only the cells of this setting")
args = parser.parse_args()
with open(args.results, newline="") as f:
    rows = list(csv.DictReader(f))
agents = [a for a in args.agents.split(",") if a] or None
rows = [r for r in rows if (not agents or r["agent"] in agents)
        and r["scenario"] == (args.scenario or r["scenario"])
        and r["setting"] == (args.setting or r["setting"])]
print(geomean_table(rows, agents), end="")
