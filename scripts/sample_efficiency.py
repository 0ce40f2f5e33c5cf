"""Sample efficiency: training-window oracle match and energy per request against steps.

    python scripts/sample_efficiency.py RUN_DIR [RUN_DIR ...] --out sample_efficiency.png

Reads ``curves.csv`` (and ``results.csv`` for the oracle's energy) written by ``autoscale
benchmark`` / ``sweep``; one column per cell, mean over seeds, one line per learning agent. The
training window includes exploration (epsilon-greedy, SB3's own), so it sits below the greedy
evaluation in ``results.csv``.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("runs", nargs="+", type=Path)
parser.add_argument("--out", type=Path, default=Path("sample_efficiency.png"))
args = parser.parse_args()

curves: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
oracle_energy: dict = defaultdict(list)
for run in args.runs:
    with open(run / "curves.csv", newline="") as f:
        for r in csv.DictReader(f):
            cell = f"{r['device']} / {r['scenario']} / {r['setting']}"
            curves[cell][r["agent"]][int(r["step"])].append((float(r["oracle_match"]), float(r["energy_mj"])))
    with open(run / "results.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["agent"] == "oracle":
                oracle_energy[f"{r['device']} / {r['scenario']} / {r['setting']}"].append(float(r["energy_mj"]))

cells = sorted(curves)
fig, axes = plt.subplots(2, len(cells), figsize=(6 * len(cells), 7), squeeze=False)
for col, cell in enumerate(cells):
    for agent, points in sorted(curves[cell].items()):
        steps = sorted(points)
        match = [100 * sum(p[0] for p in points[s]) / len(points[s]) for s in steps]
        energy = [sum(p[1] for p in points[s]) / len(points[s]) for s in steps]
        axes[0][col].plot(steps, match, label=agent)
        axes[1][col].plot(steps, energy, label=agent)
    if oracle_energy[cell]:
        e = sum(oracle_energy[cell]) / len(oracle_energy[cell])
        axes[1][col].axhline(e, color="black", ls="--", lw=1, label="oracle (eval)")
    axes[0][col].set_title(cell)
    axes[0][col].set_ylabel("oracle match, training window (%)")
    axes[0][col].set_ylim(0, 100)
    axes[1][col].set_ylabel("energy per request, training window (mJ)")
    axes[1][col].set_yscale("log")
    axes[1][col].set_xlabel("training requests")
    for ax in axes[:, col]:
        ax.grid(alpha=0.3)
axes[0][-1].legend()
axes[1][-1].legend()
fig.tight_layout()
fig.savefig(args.out, dpi=100)
print(f"wrote {args.out}")
