"""The benchmark harness: outputs, metrics, TensorBoard tags, no silent overwrite, resume."""

from __future__ import annotations

import csv

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.experiments.benchmark import (RESULT_COLUMNS, BenchmarkConfig, ResultStore, Task, finish, grid, run,
                              run_task)
from agents.cli import main

SMALL = BenchmarkConfig(train_steps=2_000, eval_steps=500, log_interval=500)
AGENTS = ["qlearning", "oracle", "fixed:local/cpu/fp32", "fixed:cloud/gpu/fp32", "random"]


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_benchmark_writes_every_output(tmp_path):
    store = ResultStore(tmp_path)
    run(grid(AGENTS, ["mi8pro"], ["translation"], ["static"], 2), SMALL, store, progress=False)
    summary = finish(store)
    rows = read(tmp_path / "results.csv")
    assert len(rows) == 10 and set(RESULT_COLUMNS) <= set(rows[0])
    by = {(r["agent"], r["seed"]): r for r in rows}
    for seed in ("0", "1"):
        assert float(by[("fixed:local/cpu/fp32", seed)]["ppw_vs_cpu"]) == pytest.approx(1.0)
        assert float(by[("fixed:cloud/gpu/fp32", seed)]["ppw_vs_cloud"]) == pytest.approx(1.0)
        oracle = by[("oracle", seed)]
        assert float(oracle["oracle_match"]) == 1.0 and float(oracle["energy_gap_to_oracle"]) == 0.0
    assert "| mi8pro | translation | static | qlearning | 2 |" in summary
    assert (tmp_path / "efficiency_per_network.png").stat().st_size > 1000
    assert (tmp_path / "oracle_match_vs_steps.png").stat().st_size > 1000


def test_every_agent_shares_the_tensorboard_tags(tmp_path):
    store = ResultStore(tmp_path)
    run(grid(["qlearning", "random"], ["mi8pro"], ["non_streaming"], ["dynamic"], 1), SMALL, store,
        progress=False)
    runs = sorted((tmp_path / "tb").iterdir())
    tags = []
    for r in runs:
        ea = EventAccumulator(str(r))
        ea.Reload()
        tags.append(set(ea.Tags()["scalars"]))
    assert {"eval/oracle_match", "eval/energy_mj", "eval/ppw_vs_cpu"} <= tags[0] & tags[1]
    learner = next(t for r, t in zip(runs, tags) if "qlearning" in r.name)
    assert {"autoscale/oracle_match", "autoscale/energy_mj", "rollout/reward_mean"} <= learner
    ea = EventAccumulator(str(next(r for r in runs if "qlearning" in r.name)))
    ea.Reload()
    assert [e.step for e in ea.Scalars("autoscale/oracle_match")] == [500, 1000, 1500, 2000]


def test_a_task_is_a_pure_function_of_its_inputs():
    task = Task("qlearning", "mi8pro", "non_streaming", "dynamic", 1)
    a = run_task(task, SMALL, None)["results"][0]
    b = run_task(task, SMALL, None)["results"][0]
    for key in ("energy_mj", "oracle_match", "ppw_vs_cpu", "qos_violation_rate"):
        assert a[key] == b[key]


def test_existing_results_are_not_overwritten_without_force(tmp_path, capsys):
    args = ["benchmark", "--agents", "random", "--seeds", "1", "--train-steps", "100",
            "--eval-steps", "100", "--out", str(tmp_path), "--quiet", "--no-figures"]
    assert main(args) == 0
    before = (tmp_path / "results.csv").read_bytes()
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "results.csv").read_bytes() == before
    assert main([*args, "--force"]) == 0


def test_resume_runs_only_missing_tasks(tmp_path):
    tasks = grid(["random", "oracle"], ["mi8pro"], ["streaming"], ["static"], 2)
    store = ResultStore(tmp_path)
    run(tasks[:2], SMALL, store, progress=False)
    with open(tmp_path / "results.csv", "a") as f:
        f.write("random,mi8pro,stre")  # a torn line, as a kill mid-write leaves
    store = ResultStore(tmp_path, resume=True)
    assert len(store.done) == 2
    run(tasks, SMALL, store, progress=False)
    rows = read(tmp_path / "results.csv")
    assert sorted((r["agent"], r["seed"]) for r in rows) == sorted((t.agent, str(t.seed)) for t in tasks)


def test_features_option_changes_the_state_definition(tmp_path):
    # per_network bins tell apart networks the paper's bins alias, so the learner's table grows
    args = ["benchmark", "--agents", "qlearning", "--seeds", "1", "--train-steps", "500",
            "--eval-steps", "200", "--quiet", "--no-figures"]
    assert main([*args, "--out", str(tmp_path / "paper")]) == 0
    assert main([*args, "--features", "per_network", "--out", str(tmp_path / "fine")]) == 0
    paper = read(tmp_path / "paper" / "results.csv")[0]
    fine = read(tmp_path / "fine" / "results.csv")[0]
    assert int(paper["memory_bytes"]) == 1024 * 9 * 4
    assert int(fine["memory_bytes"]) == 4224 * 9 * 4
    assert fine["oracle_match_ceiling"] != paper["oracle_match_ceiling"]


def test_unknown_features_name_fails_before_any_task(tmp_path, capsys):
    assert main(["benchmark", "--features", "coarse", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "coarse" in err and "per_network" in err
    assert not (tmp_path / "results.csv").exists()


def test_zero_eval_steps_is_a_clear_usage_error(tmp_path, capsys):
    assert main(["benchmark", "--eval-steps", "0", "--out", str(tmp_path), "--quiet"]) == 2
    assert "Invalid value for '--eval-steps': must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


# ---- configuration recorded and checked; side files; one run per directory ----

import json  # noqa: E402

from autoscale_env.world.files import OutputLocked, PathLock  # noqa: E402

ONE = grid(["qlearning"], ["mi8pro"], ["translation"], ["static"], 1)


def test_resume_with_another_configuration_is_refused_naming_the_fields(tmp_path, capsys):
    base = ["benchmark", "--agents", "qlearning", "--device", "mi8pro", "--scenario",
            "translation", "--setting", "static", "--eval-steps", "200", "--quiet",
            "--no-figures", "--out", str(tmp_path)]
    assert main([*base, "--seeds", "1", "--train-steps", "300"]) == 0
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["train_steps"] == 300 and recorded["package_version"]
    before = (tmp_path / "results.csv").read_text()
    rc = main([*base, "--seeds", "2", "--train-steps", "2000", "--reward", "soft",
                   "--hp", "qlearning.epsilon=0.2", "--resume"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "train_steps: 300 -> 2000" in err and 'env_kwargs.reward: (absent) -> "soft"' in err
    assert "hyperparameters.qlearning" in err
    assert (tmp_path / "results.csv").read_text() == before  # nothing mixed in
    # the same configuration resumes
    assert main([*base, "--seeds", "2", "--train-steps", "300", "--resume"]) == 0
    assert len(ResultStore(tmp_path, resume=True).read("results")) == 2


def test_a_kill_between_side_and_result_appends_leaves_no_duplicate_on_resume(tmp_path):
    cfg = BenchmarkConfig(train_steps=500, eval_steps=200, log_interval=100)
    rows = run_task(ONE[0], cfg, None)
    with ResultStore(tmp_path) as store:
        store.bind(cfg)
        for table in ("per_network", "curves"):  # killed before the results append
            path = tmp_path / f"{table}.csv"
            with open(path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=store.TABLES[table], extrasaction="ignore")
                w.writeheader()
                w.writerows(rows[table])
    with ResultStore(tmp_path, resume=True) as store:
        run(ONE, cfg, store, progress=False)
        assert len(store.read("per_network")) == len(rows["per_network"])
        assert len(store.read("curves")) == len(rows["curves"])
        assert len(store.read("results")) == 1


def test_a_second_concurrent_run_into_one_directory_is_refused_naming_the_holder(tmp_path):
    import subprocess
    import sys
    import time
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from agents.experiments.benchmark import ResultStore; "
         f"s = ResultStore({str(tmp_path)!r}); print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked, match=rf"process {holder.pid}\b"):
            ResultStore(tmp_path, resume=True)
    finally:
        holder.kill()
        holder.wait()
    t0 = time.monotonic()
    ResultStore(tmp_path, resume=True).close()  # a killed holder leaves no stale lock
    assert time.monotonic() - t0 < 10  # taken at once, not after waiting out a holder
    assert not PathLock(tmp_path, inside=True).path.exists()


def test_the_all_cells_average_of_exact_zeros_is_zero_not_nan():
    from agents.experiments.benchmark import summarize
    base = {"agent": "oracle", "device": "mi8pro", "scenario": "translation", "setting": "static",
            "energy_mj": 60.0, "ppw_vs_cpu": 5.0, "ppw_vs_cloud": 1.2, "oracle_match": 1.0,
            "oracle_match_ceiling": 0.99, "near_optimal_rate": 1.0, "energy_gap_to_oracle": 0.0,
            "qos_violation_rate": 0.0, "accuracy_violation_rate": 0.0}
    rows = [dict(base, seed=0), dict(base, seed=1)]           # floats, as evaluate_saved returns
    rows += [{k: str(v) for k, v in r.items()} for r in rows]  # strings, as results.csv reads
    table = summarize(rows)
    average = table.split("Averaged over all cells")[1]
    oracle_row = next(line for line in average.splitlines() if line.startswith("| oracle"))
    assert "nan" not in oracle_row
    assert oracle_row.endswith("| 0.0 | 0.0 |")  # energy vs oracle, QoS violations
