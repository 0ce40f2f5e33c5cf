"""The README's "Paper versus this world" table, built from a benchmark/sweep output directory.

Reads ``results.csv`` and averages over every cell and seed in it: efficiency ratios by the
geometric mean (arithmetic mean beside it), overall and split by Wi-Fi signal (regular / weak, as
recorded per request by :func:`agents.experiments.evaluation.evaluate`), and oracle match, near-optimal rate
and state ceiling by the arithmetic mean. The paper's row holds the figures of its abstract (9.8x,
1.6x) and, for the prediction accuracy, of the press summary of the paper (97.9 %, not in the abstract).
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

from agents.experiments.benchmark import geometric_mean

#: AutoScale (Kim & Wu, MICRO 2020) abstract: average energy efficiency 9.8x vs mobile CPU and
#: 1.6x vs cloud offloading; 97.9 % prediction accuracy is from VentureBeat's summary of the paper
#: (docs/calibration.md, Sources: AUTOSCALE-VB), not from the abstract.
PAPER = {"ppw_vs_cpu": 9.8, "ppw_vs_cloud": 1.6, "oracle_match": 0.979}


def _floats(rows, key):
    out = []
    for r in rows:
        try:
            out.append(float(r.get(key, "") or "nan"))
        except ValueError:
            out.append(float("nan"))
    return out


def _mean(xs):
    xs = [x for x in xs if x == x]
    return statistics.fmean(xs) if xs else float("nan")


def table(out_dir: str | Path, agents: tuple[str, ...] = ("oracle", "qlearning")) -> str:
    """The Markdown table for the agents of ``out_dir/results.csv``."""
    path = Path(out_dir) / "results.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no results")
    by_agent = defaultdict(list)
    for r in rows:
        by_agent[r["agent"]].append(r)
    cells = {(r["device"], r["scenario"], r["setting"]) for r in rows}
    seeds = {r["seed"] for r in rows}
    head = ("| | vs mobile CPU, geo (arith) | vs cloud, geo (arith) | vs CPU regular / weak Wi-Fi "
            "(geo) | vs cloud regular / weak Wi-Fi (geo) | oracle match (%) | near-optimal (%) | "
            "state ceiling (%) |")
    lines = [head, "|---|---|---|---|---|---|---|---|",
             f"| paper (abstract; 97.9 % from the press summary) | {PAPER['ppw_vs_cpu']}x | {PAPER['ppw_vs_cloud']}x | - | - | "
             f"{100 * PAPER['oracle_match']:.1f} | - | - |"]

    def g(rs, k):
        return geometric_mean(_floats(rs, k))

    for agent in agents:
        rs = by_agent.get(agent)
        if not rs:
            continue
        lines.append(
            f"| {agent} | {g(rs, 'ppw_vs_cpu'):.2f}x ({_mean(_floats(rs, 'ppw_vs_cpu')):.2f}) | "
            f"{g(rs, 'ppw_vs_cloud'):.2f}x ({_mean(_floats(rs, 'ppw_vs_cloud')):.2f}) | "
            f"{g(rs, 'ppw_vs_cpu_regular'):.2f} / {g(rs, 'ppw_vs_cpu_weak'):.2f} | "
            f"{g(rs, 'ppw_vs_cloud_regular'):.2f} / {g(rs, 'ppw_vs_cloud_weak'):.2f} | "
            f"{100 * _mean(_floats(rs, 'oracle_match')):.1f} | "
            f"{100 * _mean(_floats(rs, 'near_optimal_rate')):.1f} | "
            f"{100 * _mean(_floats(rs, 'oracle_match_ceiling')):.1f} |")
    lines.append("")
    lines.append(f"{len(cells)} cells x {len(seeds)} seeds from `{path}`; ratios averaged "
                 "geometrically over cells and seeds (arithmetic mean in brackets), rates "
                 "arithmetically.")
    return "\n".join(lines) + "\n"
