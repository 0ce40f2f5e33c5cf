"""Cross-cell comparison of agents: geometric means over a benchmark's cells.

Per cell (device, scenario, setting) each metric is first averaged over seeds; ratios are then
combined over cells by geometric mean (a ratio of 2x in one cell and 0.5x in another averages to
1x, as it should), rates by arithmetic mean.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def cell_means(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, float]]:
    """(agent, device, scenario, setting) -> seed means of the numeric result columns."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["agent"], r["device"], r["scenario"], r["setting"])].append(r)
    keys = ("energy_mj", "ppw_vs_cpu", "oracle_match", "qos_violation_rate",
            "accuracy_violation_rate", "energy_gap_to_oracle")
    return {k: {m: statistics.fmean(float(r[m]) for r in rs) for m in keys} | {"seeds": len(rs)}
            for k, rs in groups.items()}


def geomean_table(rows: Sequence[dict[str, Any]], agents: Sequence[str] | None = None) -> str:
    """Markdown: per agent, geometric means over cells of energy vs oracle and efficiency vs the
    mobile CPU, mean oracle match and violation rates, and in how many cells it used less energy
    than ``random`` (when random was run)."""
    cells = cell_means(rows)
    by_agent: dict[str, dict[tuple, dict[str, float]]] = defaultdict(dict)
    for (agent, *cell), m in cells.items():
        by_agent[agent][tuple(cell)] = m
    order = list(agents) if agents else sorted(by_agent)
    random_cells = by_agent.get("random", {})
    lines = ["| agent | cells | seeds | energy vs oracle (geo. mean, x) | eff. vs mobile CPU "
             "(geo. mean, x) | oracle match (%) | QoS viol. (%) | acc. viol. (%) | "
             "cells below random's energy |", "|" + "---|" * 9]
    for agent in order:
        if agent not in by_agent:
            continue
        ms = by_agent[agent]
        geo = lambda key: math.exp(statistics.fmean(math.log(m[key]) for m in ms.values()))  # noqa: E731
        energy_ratio = math.exp(statistics.fmean(math.log(1.0 + m["energy_gap_to_oracle"])
                                                 for m in ms.values()))
        below = sum(1 for c, m in ms.items() if c in random_cells
                    and m["energy_mj"] < random_cells[c]["energy_mj"])
        seeds = min(int(m["seeds"]) for m in ms.values())
        lines.append(
            f"| {agent} | {len(ms)} | {seeds} | {energy_ratio:.3f} | {geo('ppw_vs_cpu'):.2f} | "
            f"{100 * statistics.fmean(m['oracle_match'] for m in ms.values()):.1f} | "
            f"{100 * statistics.fmean(m['qos_violation_rate'] for m in ms.values()):.1f} | "
            f"{100 * statistics.fmean(m['accuracy_violation_rate'] for m in ms.values()):.1f} | "
            + (f"{below}/{len(ms)} |" if random_cells and agent != "random" else "- |"))
    return "\n".join(lines) + "\n"


def comparison_from_csv(path: str, agents: Sequence[str] | None = None, *,
                        scenario: str | None = None, setting: str | None = None) -> str:
    """:func:`geomean_table` of a benchmark's ``results.csv``, optionally of some agents (in
    table order) and the cells of one scenario or setting."""
    import csv
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows = [r for r in rows if (not agents or r["agent"] in agents)
            and r["scenario"] == (scenario or r["scenario"])
            and r["setting"] == (setting or r["setting"])]
    return geomean_table(rows, list(agents) if agents else None)
