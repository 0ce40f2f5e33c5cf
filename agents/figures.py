"""Figures like the paper's (needs the ``[plots]`` extra; skipped with a warning otherwise)."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def write_figures(store: Any) -> list[Path]:
    """Write ``efficiency_per_network.png`` and ``oracle_match_vs_steps.png`` into the store."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no figures; pip install 'autoscale-env[plots]'")
        return []
    written = []
    nets = store.read("per_network")
    if nets:
        written.append(_efficiency(plt, nets, store.out / "efficiency_per_network.png"))
    curves = store.read("curves")
    if curves:
        written.append(_curves(plt, curves, store.out / "oracle_match_vs_steps.png"))
    return written


def _save(fig, path: Path) -> Path:
    from autoscale_env.files import atomic_write
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def _efficiency(plt, rows, path: Path) -> Path:
    """Energy efficiency normalised to the mobile CPU, per network, one panel per scenario."""
    sums: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in rows:
        s = sums[(r["scenario"], r["network"], r["agent"])]
        s[0] += float(r["cpu_energy_mj"])
        s[1] += float(r["energy_mj"])
    scenarios = sorted({k[0] for k in sums})
    agents = sorted({k[2] for k in sums})
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5 + 3.5 * len(scenarios), 4), squeeze=False)
    width = 0.8 / max(len(agents), 1)
    for ax, sc in zip(axes[0], scenarios):
        networks = sorted({k[1] for k in sums if k[0] == sc})
        for j, agent in enumerate(agents):
            ys = [sums[(sc, n, agent)][0] / sums[(sc, n, agent)][1] if (sc, n, agent) in sums else 0
                  for n in networks]
            ax.bar([i + j * width for i in range(len(networks))], ys, width, label=agent)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(networks))], networks, rotation=45)
        ax.set_yscale("log")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(sc)
        ax.set_ylabel("energy efficiency vs mobile CPU (x)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Energy efficiency normalised to local/cpu/fp32 (higher is better)")
    path = _save(fig, path)
    plt.close(fig)
    return path


def _curves(plt, rows, path: Path) -> Path:
    """Training oracle match against steps, mean over cells and seeds, one line per agent."""
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[r["agent"]][int(r["step"])].append(float(r["oracle_match"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    for agent, points in sorted(acc.items()):
        steps = sorted(points)
        ax.plot(steps, [100 * sum(points[s]) / len(points[s]) for s in steps], label=agent)
    ax.set_xlabel("training requests")
    ax.set_ylabel("oracle match in training window (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    path = _save(fig, path)
    plt.close(fig)
    return path
