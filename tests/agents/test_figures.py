"""Figures: per cell (never pooled), mean and 95 % band over seeds, remade from the CSVs alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.experiments.benchmark import BenchmarkConfig, ResultStore, grid, mean_ci, run
from agents.experiments.figures import (curve_stats, efficiency_ratios, read_table, reference_values,
                            write_figures)

ROOT = Path(__file__).resolve().parents[2]
SMALL = BenchmarkConfig(train_steps=1_000, eval_steps=300, log_interval=500)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    run(grid(["qlearning", "oracle", "fixed:local/cpu/fp32"], ["mi8pro"],
             ["translation", "non_streaming"], ["static", "dynamic"], 2), SMALL,
        ResultStore(out), progress=False)
    return out


@pytest.mark.slow
def test_learning_curves_are_per_cell_with_a_band_over_seeds(bench):
    rows = read_table(bench, "curves")
    stats = curve_stats(rows, "oracle_match", 100.0)
    assert len(stats) == 4  # one panel per device/scenario/setting
    cell = ("mi8pro", "translation", "static")
    seeds = [float(r["oracle_match"]) * 100 for r in rows
             if (r["device"], r["scenario"], r["setting"]) == cell and r["step"] == "500"
             and r["agent"] == "qlearning"]
    assert len(seeds) == 2
    step, mean, half, n = stats[cell]["qlearning"][0]
    assert (step, n) == (500, 2) and (mean, half) == pytest.approx(mean_ci(seeds))
    assert set(stats[cell]) == {"qlearning"}  # baselines have no training curve


def test_reference_lines_are_the_oracle_and_the_state_ceiling(bench):
    results = read_table(bench, "results")
    refs = reference_values(results, "oracle_match")[("mi8pro", "non_streaming", "dynamic")]
    ceilings = [float(r["oracle_match_ceiling"]) * 100 for r in results
                if r["scenario"] == "non_streaming" and r["setting"] == "dynamic"]
    assert refs["oracle (100 %)"] == 100.0
    assert refs["state ceiling (best policy of the observation)"] == pytest.approx(
        sum(ceilings) / len(ceilings))
    energy = reference_values(results, "energy_mj")[("mi8pro", "non_streaming", "dynamic")]
    assert set(energy) == {"oracle (evaluation)", "mobile CPU (evaluation)"}


def test_efficiency_keeps_settings_apart_with_one_value_per_seed(bench):
    ratios = efficiency_ratios(read_table(bench, "per_network"))
    assert {c[2] for c in ratios} == {"static", "dynamic"} and len(ratios) == 4
    for cell, nets in ratios.items():
        for net, agents in nets.items():
            assert len(agents["oracle"]) == 2
            assert agents["fixed:local/cpu/fp32"] == pytest.approx([1.0, 1.0])


@pytest.mark.slow
def test_plot_script_remakes_figures_from_the_results_files_alone(bench, tmp_path):
    for name in ("results.csv", "curves.csv", "per_network.csv"):
        shutil.copy(bench / name, tmp_path / name)  # no tb/, no summary, nothing else
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    for name in ("oracle_match_vs_steps.png", "energy_vs_steps.png", "efficiency_per_network.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        assert f"wrote {tmp_path / name}" in proc.stdout


def test_plot_script_names_a_missing_results_file(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "results.csv" in proc.stderr


@pytest.mark.slow
def test_write_figures_accepts_a_store_or_a_directory(bench):
    assert [p.name for p in write_figures(bench)] == [
        "oracle_match_vs_steps.png", "energy_vs_steps.png", "efficiency_per_network.png"]


# ---- legibility: synthetic per-network rows, one seed each (no run needed) ---------------------


def _per_network_rows(cells, ratios):
    """Rows of per_network.csv where agent ``a`` on network ``n`` is ``ratios[a][n]`` x the CPU."""
    return [{"device": d, "scenario": sc, "setting": st, "agent": agent, "seed": "0",
             "network": net, "energy_mj": str(100.0 / r), "cpu_energy_mj": "100.0"}
            for d, sc, st in cells for agent, by_net in ratios.items() for net, r in by_net.items()]


RATIOS = {"oracle": {"mnv1": 3.0, "incv1": 2.0, "sqz": 1.5},
          "random": {"mnv1": 0.3, "incv1": 0.6, "sqz": 0.8}}


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    yield pyplot
    pyplot.close("all")


def _suptitle_gap_inches(plt, fig):
    from matplotlib.text import Text
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = next(t for t in fig.findobj(Text) if t.get_text() == fig.get_suptitle())
    top_of_panels = max(ax.get_tightbbox(renderer).y1 for ax in fig.axes if ax.get_visible())
    return (title.get_window_extent(renderer).y0 - top_of_panels) / fig.dpi


def test_a_single_panel_sits_right_under_the_title(plt):
    from agents.experiments.figures import efficiency_figure
    fig = efficiency_figure(plt, _per_network_rows([("mi8pro", "non_streaming", "static")], RATIOS))
    gap = _suptitle_gap_inches(plt, fig)
    assert -0.05 < gap < 0.3, f"{gap:.2f} in of empty band between the title and the panel"


def test_the_log_axis_labels_ticks_below_one_when_bars_go_below_one(plt):
    from agents.experiments.figures import efficiency_figure
    fig = efficiency_figure(plt, _per_network_rows([("mi8pro", "non_streaming", "static")], RATIOS))
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    labelled = [t.get_position()[1] for t in ax.yaxis.get_majorticklabels() + ax.yaxis.get_minorticklabels()
                if t.get_text() and low <= t.get_position()[1] <= high]
    assert any(v < 1 for v in labelled), labelled
    assert low < 0.3, "the lowest bar (0.3x) must be inside the axis"


def test_the_network_abbreviations_are_spelled_out(plt):
    from agents.experiments.figures import efficiency_figure
    fig = efficiency_figure(plt, _per_network_rows([("mi8pro", "non_streaming", "static")], RATIOS))
    caption = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "incv1 = Inception v1 (GoogLeNet) 224" in caption
    assert "sqz = SqueezeNet 1.0" in caption and "mnv1 = MobileNet v1" in caption
