"""Sweeps: the local pool and Ray give the rows of a sequential run; reruns finish only the rest."""

from __future__ import annotations

import csv

import pytest

from agents.benchmark import BenchmarkConfig, ResultStore, grid, run
from agents.sweep import main, run_local

CFG = BenchmarkConfig(train_steps=1_500, eval_steps=300, log_interval=500)
TASKS = grid(["qlearning", "random"], ["mi8pro", "moto_x_force"], ["translation"], ["static"], 2)
COMPARED = ("energy_mj", "oracle_match", "ppw_vs_cpu", "qos_violation_rate", "energy_gap_to_oracle")


def rows(path):
    with open(path / "results.csv", newline="") as f:
        return {(r["agent"], r["device"], r["seed"]): tuple(r[k] for k in COMPARED)
                for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    out = tmp_path_factory.mktemp("seq")
    run(TASKS, CFG, ResultStore(out), progress=False)
    return rows(out)


def test_local_pool_matches_sequential(tmp_path, sequential):
    run_local(TASKS, CFG, ResultStore(tmp_path), workers=2, progress=False)
    assert rows(tmp_path) == sequential and len(sequential) == 8


@pytest.mark.distributed
@pytest.mark.slow
def test_ray_engine_matches_local(tmp_path, sequential):
    pytest.importorskip("ray")
    from agents.sweep import run_ray
    run_ray(TASKS, CFG, ResultStore(tmp_path), workers=2, progress=False)
    assert rows(tmp_path) == sequential


def test_rerun_after_a_kill_completes_only_missing_tasks(tmp_path, sequential):
    store = ResultStore(tmp_path)
    run(TASKS[:3], CFG, store, progress=False)  # as if killed after three tasks
    before = (tmp_path / "results.csv").read_text().splitlines()
    args = ["--agents", "qlearning,random", "--device", "mi8pro,moto_x_force", "--scenario",
            "translation", "--setting", "static", "--seeds", "2", "--train-steps", "1500",
            "--eval-steps", "300", "--log-interval", "500", "--out", str(tmp_path), "--quiet",
            "--no-figures", "--workers", "2"]
    assert main(args) == 0
    after = (tmp_path / "results.csv").read_text().splitlines()
    assert after[: len(before)] == before and len(after) == len(before) + 5
    assert rows(tmp_path) == sequential


def test_ray_missing_names_the_extra(monkeypatch, tmp_path):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake)
    from agents.sweep import run_ray
    from autoscale_env.errors import DependencyMissing
    with pytest.raises(DependencyMissing, match=r"autoscale-env\[distributed\]"):
        run_ray(TASKS, CFG, ResultStore(tmp_path), progress=False)
