"""TensorBoard logs: written by tensorboardX, read back with TensorBoard's own reader."""

from __future__ import annotations

import csv
import math

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_accumulator import (
    EventAccumulator as PluginEventAccumulator,  # what the TensorBoard server reads with
)
from tensorboard.plugins.hparams import metadata as hp_metadata

from agents.experiments.benchmark import BenchmarkConfig, ResultStore, grid, run
from agents.experiments.tracking import NOT_METRICS, ScalarWriter, log_evaluation

SMALL = BenchmarkConfig(train_steps=2_000, eval_steps=300, log_interval=500)


def _load(run_dir):
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def test_eval_has_every_results_metric_and_baselines_are_flat_lines(tmp_path):
    run(grid(["qlearning", "oracle"], ["mi8pro"], ["translation"], ["static"], 1), SMALL,
        ResultStore(tmp_path), progress=False)
    with open(tmp_path / "results.csv", newline="") as f:
        rows = {r["agent"]: r for r in csv.DictReader(f)}
    metrics = [k for k in rows["oracle"] if k not in NOT_METRICS]
    assert {"accuracy_violation_rate", "oracle_match_ceiling", "energy_gap_to_oracle"} <= set(metrics)
    for agent, learns in (("qlearning", True), ("oracle", False)):
        (run_dir,) = (tmp_path / "tb").glob(f"*__{agent}__0")
        ea = _load(run_dir)
        for name in metrics:
            if not math.isfinite(float(rows[agent][name] or "nan")):
                # e.g. a ratio over weak-signal requests when the evaluation drew none: the
                # writer logs finite numbers only
                assert f"eval/{name}" not in ea.Tags()["scalars"], name
                continue
            events = ea.Scalars(f"eval/{name}")
            assert all(abs(e.value - float(rows[agent][name])) <= 1e-6 * max(1, abs(e.value))
                       for e in events), name
            steps = [e.step for e in events]
            # a learner's evaluation is one point; a baseline's spans the training axis
            assert steps == ([2_000] if learns else [0, 500, 1_000, 1_500, 2_000]), name


def test_each_task_is_an_hparams_session(tmp_path):
    run(grid(["qlearning", "random"], ["mi8pro"], ["streaming"], ["dynamic"], 1), SMALL,
        ResultStore(tmp_path), progress=False)
    for run_dir in (tmp_path / "tb").iterdir():
        ea = PluginEventAccumulator(str(run_dir))
        ea.Reload()
        assert hp_metadata.SESSION_START_INFO_TAG in ea.Tags()["tensors"]
        content = ea.PluginTagToContent(hp_metadata.PLUGIN_NAME)[hp_metadata.SESSION_START_INFO_TAG]
        start = hp_metadata.parse_session_start_info_plugin_data(content)
        hp = {k: (v.string_value or v.number_value) for k, v in start.hparams.items()}
        assert hp["device"] == "mi8pro" and hp["scenario"] == "streaming"
        assert hp["setting"] == "dynamic" and hp["features"] == "paper"
        if "qlearning" in run_dir.name:
            assert hp["agent"] == "qlearning" and hp["hp/alpha"] == 0.9
        # no experiment summary per run: TensorBoard unites the sessions' hyperparameters
        assert hp_metadata.EXPERIMENT_TAG not in ea.Tags()["tensors"]


def test_a_metric_added_to_the_results_row_flows_into_eval(tmp_path):
    writer = ScalarWriter(tmp_path / "run")
    row = {"agent": "ppo", "device": "mi8pro", "scenario": "streaming", "setting": "static",
           "seed": 0, "train_steps": 100, "energy_mj": 12.5, "near_optimal_rate": 0.75,
           "note": "text is not a metric", "nan_metric": float("nan")}
    tags = log_evaluation(writer, row, learns=True, train_steps=100, log_interval=50)
    writer.close()
    writer.close()  # twice is safe, and the writer still says it logs
    assert writer.enabled
    assert sorted(tags) == ["eval/energy_mj", "eval/near_optimal_rate"]
    ea = _load(tmp_path / "run")
    assert [(e.step, e.value) for e in ea.Scalars("eval/near_optimal_rate")] == [(100, 0.75)]


def test_writer_imports_tensorboardx_without_torch_and_events_read_back(tmp_path):
    """The writer keeps torch out of a process that has not imported it (seconds per sweep
    worker), leaves ``import torch`` working afterwards, and its grouped scalars read back."""
    import subprocess
    import sys
    code = (
        "import sys\n"
        "from agents.experiments.tracking import ScalarWriter\n"
        f"w = ScalarWriter({str(tmp_path)!r})\n"
        "w.scalars('eval', {'a': 1.5, 'b': 2}, 7)\n"
        "w.close()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('torch') is None or __import__('torch')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    ea = _load(tmp_path)
    assert [(e.step, e.value) for e in ea.Scalars("eval/a")] == [(7, 1.5)]
    assert [(e.step, e.value) for e in ea.Scalars("eval/b")] == [(7, 2.0)]
