"""Figures of a benchmark or sweep, drawn from its results files alone (the ``[plots]`` extra).

``write_figures(out_dir)`` reads ``results.csv``, ``curves.csv`` and ``per_network.csv`` and writes:

* ``oracle_match_vs_steps.png``: learning curves, one panel per cell (device / scenario /
  setting): each learning agent's oracle match in the training window, mean over seeds with a
  95 % Student-t band, against training requests; reference lines: the oracle (100 % by
  definition) and the state ceiling (the best any policy of the observation can reach, from the
  evaluation in ``results.csv``);
* ``energy_vs_steps.png``: the same panels for energy per request, with the oracle's and the
  mobile CPU's evaluated energy as reference lines (when they were benchmarked);
* ``efficiency_per_network.png``: energy efficiency against the mobile CPU per network, one
  panel per cell (settings apart), bars with 95 % intervals over seeds.

``python scripts/plot.py runs/bench`` remakes them without rerunning anything. Without matplotlib
nothing is drawn and a warning names the extra.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CELL = ("device", "scenario", "setting")
MOBILE_CPU = "fixed:local/cpu/fp32"


def read_table(out: str | Path, table: str) -> list[dict[str, str]]:
    """Rows of ``<out>/<table>.csv`` (complete lines only; missing file: no rows)."""
    path = Path(out) / f"{table}.csv"
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):  # a torn last line from a kill: drop it
        text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(text.splitlines()))


def write_figures(out: Any) -> list[Path]:
    """Draw every figure of the run in ``out`` (a directory, or a ``ResultStore``) into it."""
    out = Path(getattr(out, "out", out))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no figures; install it with: "
                       "pip install -c constraints.txt 'autoscale-env[plots]'")
        return []
    results = read_table(out, "results")
    written = []
    curves = read_table(out, "curves")
    if curves:
        written.append(_curves(plt, curves, results, "oracle_match", out / "oracle_match_vs_steps.png"))
        written.append(_curves(plt, curves, results, "energy_mj", out / "energy_vs_steps.png"))
    nets = read_table(out, "per_network")
    if nets:
        written.append(_efficiency(plt, nets, out / "efficiency_per_network.png"))
    return written


# ---- statistics ------------------------------------------------------------------------------


def mean_band(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95 % Student-t half-width over seeds (0 for a single value)."""
    from agents.experiments.benchmark import mean_ci
    return mean_ci(list(values))


def _cell_key(row: dict[str, str]) -> tuple[str, str, str]:
    return tuple(row[k] for k in CELL)  # type: ignore[return-value]


def _cell_order(cell: tuple[str, str, str]) -> tuple:
    """Device, scenario, then settings in their natural order (static before dynamic)."""
    settings = ("static", "dynamic")
    return (cell[0], cell[1], settings.index(cell[2]) if cell[2] in settings else 2, cell[2])


def _plain_log_ticks(ax) -> None:
    """Tick labels as plain numbers (0.1, 1, 5) instead of powers of ten on a log axis."""
    from matplotlib.ticker import FuncFormatter
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if _leading_digit(v) in (2, 5)
                                               else ""))


def _leading_digit(value: float) -> int:
    """The first significant digit of a positive number (0.5 -> 5, 20 -> 2; 0 for 0 or less)."""
    if value <= 0:
        return 0
    return int(round(value / 10 ** math.floor(math.log10(value)), 6))


def agent_order(name: str) -> tuple[int, str]:
    from agents.experiments.benchmark import agent_order as order
    return order(name)


def _grid(plt, n: int, ncols: int, panel: tuple[float, float]):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols + 1.5, panel[1] * nrows + 0.8),
                             squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _ncols(cells: Sequence[tuple[str, str, str]]) -> int:
    """Settings side by side when they are a small set (static | dynamic), else up to 4."""
    settings = {c[2] for c in cells}
    return len(settings) if 1 < len(settings) <= 4 and len(cells) > len(settings) else min(4, len(cells))


def _layout(fig) -> None:
    """Tight panels right below the suptitle, whatever the figure's height.

    matplotlib's ``tight_layout`` makes room for the suptitle itself; reserving a band for it as
    well (as this once did) left an empty band above a single row of panels.
    """
    fig.tight_layout()


def _save(fig, path: Path) -> Path:
    from autoscale_env.world.files import atomic_write
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def _seeds_note(counts: set[int]) -> str:
    if not counts:
        return ""
    lo, hi = min(counts), max(counts)
    return f"{lo} seed{'s' if lo != 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"


# ---- learning curves -------------------------------------------------------------------------

_CURVE_LABELS = {
    "oracle_match": ("oracle match in training window (%)", 100.0,
                     "Learning curves: share of training requests on which the agent chose the "
                     "oracle's target"),
    "energy_mj": ("energy per request in training window (mJ)", 1.0,
                  "Learning curves: phone energy per request while training"),
}


def curve_stats(rows: Sequence[dict[str, str]], metric: str,
                scale: float = 1.0) -> dict[tuple, dict[str, list[tuple[int, float, float, int]]]]:
    """Learning curves per cell (never pooled across cells) and agent:
    ``[(step, mean, 95 % half-width, seeds), ...]`` over the seeds logged at that step."""
    data: dict[tuple, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        data[_cell_key(r)][r["agent"]][int(r["step"])].append(float(r[metric]) * scale)
    return {cell: {agent: [(step, *mean_band(v), len(v)) for step, v in sorted(points.items())]
                   for agent, points in agents.items()}
            for cell, agents in data.items()}


def reference_values(results: Sequence[dict[str, str]], metric: str) -> dict[tuple, dict[str, float]]:
    """Per cell, the reference lines of a learning-curve panel (label -> value), from the
    greedy evaluation in ``results.csv``: for oracle match the oracle (100 %) and the state
    ceiling; for energy the oracle's and the mobile CPU's energy per request."""
    evals: dict[tuple, dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        evals[_cell_key(r)][r["agent"]].append(r)
    out: dict[tuple, dict[str, float]] = {}
    for cell, by_agent in evals.items():
        lines: dict[str, float] = {}
        if metric == "oracle_match":
            lines["oracle (100 %)"] = 100.0
            # every agent of a seed sees the same requests: average the ceiling over all rows
            ceilings = [float(r["oracle_match_ceiling"]) * 100 for rows in by_agent.values()
                        for r in rows if r.get("oracle_match_ceiling")]
            if ceilings:
                lines["state ceiling (best policy of the observation)"] = sum(ceilings) / len(ceilings)
        else:
            for agent, label in (("oracle", "oracle (evaluation)"),
                                 (MOBILE_CPU, "mobile CPU (evaluation)")):
                if by_agent.get(agent):
                    lines[label] = (sum(float(r[metric]) for r in by_agent[agent])
                                    / len(by_agent[agent]))
        out[cell] = lines
    return out


def _curves(plt, rows, results, metric: str, path: Path) -> Path:
    fig = curves_figure(plt, rows, results, metric)
    saved = _save(fig, path)
    plt.close(fig)
    return saved


def curves_figure(plt, rows, results, metric: str):
    """The learning-curve figure (not saved): one panel per cell; per learning agent the mean
    over seeds and a 95 % band. ``plt`` is ``matplotlib.pyplot``."""
    ylabel, scale, title = _CURVE_LABELS[metric]
    data = curve_stats(rows, metric, scale)
    references = reference_values(results, metric)
    cells = sorted(data, key=_cell_order)
    agents = sorted({a for c in cells for a in data[c]}, key=agent_order)
    colors = {a: f"C{i}" for i, a in enumerate(agents)}
    fig, axes = _grid(plt, len(cells), _ncols(cells), (4.6, 3.3))
    seeds: set[int] = set()
    for ax, cell in zip(axes, cells):
        for agent in agents:
            points = data[cell].get(agent)
            if not points:
                continue
            steps = [p[0] for p in points]
            seeds.update(p[3] for p in points)
            ax.plot(steps, [p[1] for p in points], color=colors[agent], lw=1.5, label=agent)
            ax.fill_between(steps, [p[1] - p[2] for p in points], [p[1] + p[2] for p in points],
                            color=colors[agent], alpha=0.2, lw=0)
        for (label, value), color in zip(references.get(cell, {}).items(), ("black", "grey")):
            ax.axhline(value, color=color, ls="--", lw=1, label=label)
        ax.set_title(" / ".join(cell), fontsize=10)
        ax.set_xlabel("training requests")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_ylim(0, 105 if metric == "oracle_match" else None)
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.0, 0.95),
               fontsize=8, frameon=False)
    fig.suptitle(f"{title}\nmean and 95 % interval over {_seeds_note(seeds)}; dashed: "
                 "references from the greedy evaluation", fontsize=10)
    _layout(fig)
    return fig


# ---- efficiency per network ------------------------------------------------------------------


def efficiency_ratios(rows: Sequence[dict[str, str]]) -> dict[tuple, dict[str, dict[str, list[float]]]]:
    """cell -> network -> agent -> [mobile-CPU energy / agent energy, one per seed]
    (the cell includes the setting: static and dynamic are never pooled)."""
    ratio: dict[tuple, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        energy = float(r["energy_mj"])
        if energy > 0:
            ratio[_cell_key(r)][r["network"]][r["agent"]].append(float(r["cpu_energy_mj"]) / energy)
    return ratio


def _efficiency(plt, rows, path: Path) -> Path:
    fig = efficiency_figure(plt, rows)
    saved = _save(fig, path)
    plt.close(fig)
    return saved


def network_names(networks: Sequence[str]) -> str:
    """The caption line that spells out the catalog's short network names (``workloads.toml``)."""
    from autoscale_env.world import config
    catalog = config.load_workloads()
    return "; ".join(f"{n} = {catalog[n].display_name}" if n in catalog else n
                     for n in sorted(networks))


def efficiency_figure(plt, rows):
    """The per-network efficiency figure (not saved): per cell (settings apart) efficiency vs
    the mobile CPU per network, mean ± 95 % over seeds, the networks' full names below."""
    ratio = efficiency_ratios(rows)
    cells = sorted(ratio, key=_cell_order)
    agents = sorted({a for c in cells for n in ratio[c] for a in ratio[c][n]}, key=agent_order)
    colors = {a: f"C{i}" for i, a in enumerate(agents)}
    fig, axes = _grid(plt, len(cells), _ncols(cells), (5.2, 3.6))
    width = 0.8 / max(len(agents), 1)
    seeds: set[int] = set()
    shown: set[str] = set()
    for ax, cell in zip(axes, cells):
        networks = sorted(ratio[cell])
        shown.update(networks)
        lowest = 1.0
        for j, agent in enumerate(agents):
            xs, ys, lo, hi = [], [], [], []
            for i, net in enumerate(networks):
                values = ratio[cell][net].get(agent)
                if not values:
                    continue
                m, h = mean_band(values)
                seeds.add(len(values))
                xs.append(i + j * width)
                ys.append(m)
                # a log axis: clip the lower whisker above zero
                lo.append(min(h, m * 0.999))
                hi.append(h)
            ax.bar(xs, ys, width, color=colors[agent], label=agent, yerr=[lo, hi],
                   error_kw={"lw": 0.8, "capsize": 1.5})
            lowest = min([lowest, *ys])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(networks))], networks, rotation=45,
                      ha="right", fontsize=8)
        ax.set_yscale("log")
        # the bars decide the range; a lower whisker that reaches towards 0 (few seeds) runs
        # off the bottom instead of stretching the axis over decades no bar needs
        ax.set_ylim(bottom=lowest / 2)
        _plain_log_ticks(ax)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(" / ".join(cell), fontsize=10)
        ax.set_ylabel("energy efficiency vs mobile CPU (x)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.0, 0.95),
               fontsize=8, frameon=False)
    fig.suptitle("Energy efficiency per network, normalised to local/cpu/fp32 on the same requests "
                 f"(higher is better)\nmean and 95 % interval over {_seeds_note(seeds)}",
                 fontsize=10)
    _layout(fig)
    import textwrap
    caption = textwrap.fill("Networks: " + network_names(sorted(shown)),
                            width=int(fig.get_figwidth() * 14))
    fig.text(0.01, 0.0, caption, ha="left", va="top", fontsize=8)
    return fig


def sample_efficiency_figure(runs: Sequence[str | Path], out: str | Path) -> Path:
    """Sample efficiency: training-window oracle match and energy per request against steps.

    Reads ``curves.csv`` (and ``results.csv`` for the oracle's energy) of each benchmark or sweep
    directory in ``runs``; one column per cell, mean over seeds, one line per learning agent. The
    training window includes exploration (epsilon-greedy, SB3's own), so it sits below the greedy
    evaluation in ``results.csv``. Needs the ``[plots]`` extra.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from autoscale_env.world.errors import DependencyMissing
        raise DependencyMissing("matplotlib", "plots", "the sample-efficiency figure") from None
    curves: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    oracle_energy: dict = defaultdict(list)
    for run in map(Path, runs):
        for r in read_table(run, "curves"):
            cell = f"{r['device']} / {r['scenario']} / {r['setting']}"
            curves[cell][r["agent"]][int(r["step"])].append((float(r["oracle_match"]),
                                                              float(r["energy_mj"])))
        for r in read_table(run, "results"):
            if r["agent"] == "oracle":
                oracle_energy[f"{r['device']} / {r['scenario']} / {r['setting']}"].append(
                    float(r["energy_mj"]))
    if not curves:
        from autoscale_env.world.errors import ConfigError
        raise ConfigError(f"no training curves in {', '.join(map(str, runs))} (curves.csv)")
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
    return _save(fig, Path(out))
