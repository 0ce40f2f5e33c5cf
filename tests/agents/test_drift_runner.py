"""``autoscale drift``: the metrics mean what they say, the suite writes its files and refuses to
overwrite, and the CLI reports per shift."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from agents.cli import main
from agents.experiments.drift_study import (DriftConfig, RunRecord, _first_recovery, metrics, near_optimal, run_one,
                          run_suite, windowed)

SMALL = DriftConfig(shift_at=2000, after=1000, window=200, pre_window=1000, regret_window=500)


def test_near_optimal_definition():
    assert near_optimal(3, 3, False, False, 99.0, 1.0, False)  # the oracle's own choice
    assert near_optimal(1, 3, True, True, 105.0, 100.0, True)  # within 5 % and feasible
    assert not near_optimal(1, 3, True, True, 105.1, 100.0, True)
    assert not near_optimal(1, 3, False, True, 90.0, 100.0, True)  # misses QoS
    assert not near_optimal(1, 3, True, True, 90.0, 100.0, False)  # no target is feasible


def test_recovery_is_the_first_window_back_at_the_level():
    near = np.r_[np.ones(100), np.zeros(30), np.ones(200)].astype(bool)
    assert _first_recovery(near, 100, 50, 0.9) == 25  # window [125, 175): 45 of 50
    assert _first_recovery(near, 130, 50, 0.9) == 0
    assert _first_recovery(np.zeros(400, bool), 100, 50, 0.5) is None
    np.testing.assert_allclose(windowed(np.arange(5.0), 2), [np.nan, 0.5, 1.5, 2.5, 3.5])


def test_metrics_of_a_synthetic_run():
    n, shift = 4000, 2000
    near = np.ones(n, bool)
    near[2000:2300] = False
    regret = np.where(near, 0.0, 2.0)
    tr = RunRecord(near, regret, np.ones(n), np.ones(n), np.ones(n, bool), np.zeros(n, bool))
    m = metrics(tr, shift, SMALL)
    assert m["pre_rate"] == 1.0 and m["regret_1000"] == 2.0 * 300 * 1 and m["regret_1000_pre"] == 0
    assert m["regret_1000"] == pytest.approx(600.0) and m["recovery"] == 300 - 20


def test_the_oracle_has_no_regret_and_random_has_much():
    oracle = metrics(run_one("oracle", "edge_gone", 0, SMALL), 2000, SMALL)
    rand = metrics(run_one("random", "edge_gone", 0, SMALL), 2000, SMALL)
    assert oracle["regret_1000"] == 0.0 and oracle["pre_rate"] == 1.0
    assert oracle["recovery"] == 0
    assert rand["regret_1000"] > 1000 and rand["pre_rate"] < 0.3


def test_a_learner_runs_online_through_the_shift():
    tr = run_one("linucb", "wifi_weak", 0, SMALL)
    assert len(tr.near_optimal) == 3000
    # after the shift the cloud is slow: the learner moves to local targets
    assert tr.local[2500:].mean() > tr.local[1000:2000].mean()


@pytest.mark.slow
def test_suite_writes_files_refuses_overwrite_and_probes_the_heat(tmp_path):
    # long enough for the phone to heat up (2-minute time constant, ~30 requests a second)
    cfg = DriftConfig(shift_at=6000, after=4000, window=200, pre_window=1000, regret_window=500)
    text = run_suite(["oracle", "random"], ["thermal", "cloud_slow"], 1, cfg, tmp_path,
                     progress=False, figures=True)
    rows = list(csv.DictReader(open(tmp_path / "drift.csv")))
    assert {(r["agent"], r["shift"]) for r in rows} == {
        (a, s) for a in ("oracle", "random") for s in ("thermal", "cloud_slow")}
    assert (tmp_path / "drift.png").stat().st_size > 0 and "| thermal | oracle |" in text
    probe = [r for r in csv.DictReader(open(tmp_path / "thermal_probe.csv"))
             if r["target"] == "local/cpu/fp32"]
    slowdown = [float(r["slowdown"]) for r in probe]
    # running the CPU in the heat throttles it more over time
    assert slowdown[-1] > slowdown[1] >= 1.0 and slowdown[-1] > 1.2
    with pytest.raises(FileExistsError, match="--force"):
        run_suite(["oracle"], ["thermal"], 1, SMALL, tmp_path, progress=False)


def test_cli(tmp_path, capsys):
    def args(shift_at, after):
        return ["drift", "--agents", "oracle", "--shifts", "heavy_app", "--seeds", "1",
                "--shift-at", str(shift_at), "--after", str(after), "--window", "200",
                "--out", str(tmp_path), "--no-figures", "--quiet"]
    assert main(args(2000, 600)) == 2  # after must cover the 1,000-request regret window
    assert "regret window" in capsys.readouterr().err
    assert main(args(2000, 1000)) == 0
    assert "| heavy_app | oracle | 1 |" in capsys.readouterr().out
    assert main(["drift", "--shifts", "flood", "--out", str(tmp_path / "x")]) == 2
    assert "unknown drift shift 'flood'" in capsys.readouterr().err
