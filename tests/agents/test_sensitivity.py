"""`autoscale sensitivity`: every estimate screened, the top ones decomposed, resumable output."""

from __future__ import annotations

import csv
import json

import pytest

from agents.cli import main as cli_main
from agents.experiments.sensitivity import SampleStore, make_config, run
from agents.experiments.world_metrics import grid_cells
from autoscale_env.tools.estimates import enumerate_estimates


def main(argv):
    """``autoscale sensitivity ARGV``."""
    return cli_main(["sensitivity", *argv])

pytest.importorskip("SALib")

CELLS = grid_cells(["mi8pro"], ["non_streaming"], ["static"])


def param(file, *path):
    """The parameter that moves the number at ``file:path`` (or the list holding it)."""
    for e in enumerate_estimates():
        for a in e.numbers:
            if a.file == file and (a.path == path or a.path == path[:-1] or a.path[:-1] == path):
                return e.name
    raise AssertionError(f"{file}:{path} is not an estimate")


BUSY = param("devices/mi8pro.toml", "processors", "cpu", "busy_power_w")
# the cloud server has a row for every network on both its units: its fallback never happens
NO_EFFECT = param("devices/cloud_server.toml", "fallback_slowdown")
PARAMS = (BUSY, NO_EFFECT, param("links.toml", "wifi", "rtt_ms"),
          param("settings.toml", "static", "rssi_p2p_dbm", 1))


def small_config(**kw):
    est = [e for e in enumerate_estimates() if e.name in PARAMS]
    opts = dict(method="sobol", trajectories=3, samples=8, sobol_top=1, tornado_top=2, episodes=3,
                seed=0, cells=CELLS, estimates=est)
    opts.update(kw)
    return make_config(**opts)


def samples(out):
    with open(out / "samples.csv", newline="") as f:
        return {(r["phase"], r["index"]): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sens")
    an = run(small_config(), out, workers=1, progress=False)
    return out, an


@pytest.mark.slow
def test_outputs_name_the_parameters_that_matter(finished):
    out, an = finished
    assert an.ranking("oracle_vs_cpu")[0] == BUSY
    for metric in an.cfg.metrics:
        assert an.morris[metric][NO_EFFECT]["mu_star"] == 0.0
    with open(out / "sensitivity.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["parameter"] for r in rows} == set(PARAMS)
    assert {r["metric"] for r in rows} >= {"oracle_vs_cpu", "oracle_vs_cloud", "state_ceiling"}
    assert len(rows) == len(PARAMS) * len(an.cfg.metrics)
    total = {(r["parameter"], r["metric"]): float(r["ST"]) for r in rows if r["ST"] != ""}
    # With 8 base samples the total index is noisy (SALib's 95 % half-width is about 0.6 here),
    # so the check is the one that cannot be noise: the CPU's busy power moves the result against
    # the CPU (the estimate that moves nothing, NO_EFFECT, has a Morris mu* of exactly 0 above).
    assert total[(BUSY, "oracle_vs_cpu")] > 0.0
    md = (out / "sensitivity.md").read_text()
    top3 = an.ranking("oracle_vs_cloud")[:3]
    assert ("The three estimates that move the oracle efficiency vs cloud most (Morris mu*): "
            + ", ".join(f"{i}. `{n}`" for i, n in enumerate(top3, 1))) in md
    assert "the oracle beats the mobile CPU by at least" in md
    for metric in an.cfg.metrics:
        slug = metric.replace(":", "_").replace("/", "_")
        assert (out / f"tornado_{slug}.png").stat().st_size > 1000
    assert (out / "tornado_headline.png").exists()


@pytest.mark.slow
def test_every_world_is_one_row_and_a_rerun_adds_none(finished):
    out, an = finished
    before = samples(out)
    k = len(PARAMS)
    assert sum(p == "morris" for p, _ in before) == 3 * (k + 1)
    assert sum(p == "sobol" for p, _ in before) == 8 * (len(an.sobol_names) + 2)
    run(small_config(), out, workers=1, progress=False)
    assert samples(out) == before


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_results(finished, tmp_path):
    out, _ = finished
    lines = (out / "samples.csv").read_text().splitlines(keepends=True)
    (tmp_path / "config.json").write_text((out / "config.json").read_text())
    # half the worlds, then a torn line, as a kill mid-write leaves it
    (tmp_path / "samples.csv").write_text("".join(lines[: len(lines) // 2]) + lines[-1][:20])
    run(small_config(), tmp_path, workers=2, progress=False)  # a pool finishes the rest
    assert samples(tmp_path) == samples(out)
    assert (tmp_path / "sensitivity.csv").read_text() == (out / "sensitivity.csv").read_text()


def test_another_configuration_in_the_same_directory_is_refused(finished):
    out, _ = finished
    with pytest.raises(FileExistsError, match="differs in: episodes"):
        SampleStore(out, small_config(episodes=4))


def test_list_covers_every_estimate(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    est = enumerate_estimates()
    assert out.startswith(f"{len(est)} parameters over {sum(e.count for e in est)} estimated numbers")
    for e in est:
        assert f"| {e.name} | {e.count} |" in out


def test_bad_options_are_named(tmp_path, capsys):
    assert main(["--samples", "12", "--out", str(tmp_path)]) == 2
    assert "--samples must be a power of 2" in capsys.readouterr().err
    assert main(["--device", "pixel9", "--out", str(tmp_path)]) == 2
    assert "unknown device 'pixel9'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.distributed
def test_ray_engine_gives_the_same_worlds(finished, tmp_path):
    pytest.importorskip("ray")
    out, _ = finished
    run(small_config(), tmp_path, engine="ray", workers=2, progress=False)
    assert samples(tmp_path) == samples(out)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(
        (out / "config.json").read_text())


@pytest.mark.slow
def test_the_tornado_legend_stays_off_the_bars(finished):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.experiments.sensitivity import tornado_figure
    _, an = finished
    for metric in ("oracle_vs_cpu", "oracle_vs_cloud"):
        fig = tornado_figure(plt, an, metric)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        assert not legend.overlaps(ax.get_window_extent(renderer)), "legend over the bars"
        assert not legend.overlaps(ax.xaxis.label.get_window_extent(renderer))
        plt.close(fig)
