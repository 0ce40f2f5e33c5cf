"""The standard protocol autoscale-bench-v1: its data, the normalised score, the regression check
against the stored expected results, a user's own agent class, submissions and the leaderboard."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest

from agents.cli import main
from agents.base import Agent
from autoscale_env.world.errors import UnknownNameError
from agents.experiments.protocol import (
    EXPECTED_FILE,
    REGENERATE_COMMAND,
    Entry,
    ProtocolError,
    check,
    compare,
    load_expected,
    load_protocol,
    normalised_score,
    regenerate,
    resolve_agent,
    run_entries,
    verify,
    write_leaderboard,
)
from autoscale_env.world import config

PROTOCOL = load_protocol()
MI8 = "mi8pro/non_streaming/dynamic"
CHEAP = ["oracle", "fixed:local/cpu/fp32", "fixed:cloud/gpu/fp32", "random"]
LEARNERS = ["qlearning", "tabular-bandit"]


# ----------------------------------------------------------------------------------------------
# The protocol as data


def test_the_protocol_is_the_papers_grid_with_a_quick_subset():
    assert (PROTOCOL.name, PROTOCOL.version) == ("autoscale-bench-v1", 1)
    assert len(PROTOCOL.cells) == 18
    assert {c.device for c in PROTOCOL.cells} == {"mi8pro", "galaxy_s10e", "moto_x_force"}
    assert {c.scenario for c in PROTOCOL.cells} == {"non_streaming", "streaming", "translation"}
    assert {c.setting for c in PROTOCOL.cells} == {"static", "dynamic"}
    assert PROTOCOL.train_steps == 64_000  # the paper's Q-learner budget
    assert set(PROTOCOL.quick_cells) < set(PROTOCOL.cells)
    assert set(PROTOCOL.quick_seeds) <= set(PROTOCOL.train_seeds)
    evaluation = {PROTOCOL.eval_offset + s for s in PROTOCOL.train_seeds}
    assert not evaluation & set(PROTOCOL.train_seeds)
    ci = {e.name for e in PROTOCOL.references if e.ci}
    assert ci == set(CHEAP + LEARNERS)


def test_a_protocol_whose_evaluation_seeds_the_harness_does_not_use_is_refused(tmp_path):
    bad = tmp_path / "protocol.toml"
    bad.write_text(PROTOCOL.path.read_text().replace("eval_offset = 10000", "eval_offset = 7"))
    with pytest.raises(ProtocolError, match="eval_offset = 7.*EVAL_SEED_OFFSET = 10000"):
        load_protocol(bad)


def test_a_quick_cell_outside_the_grid_is_refused(tmp_path):
    bad = tmp_path / "protocol.toml"
    bad.write_text(PROTOCOL.path.read_text().replace('"galaxy_s10e/streaming/static"',
                                                      '"pixel/streaming/static"'))
    with pytest.raises(ProtocolError, match="pixel/streaming/static is not a cell"):
        load_protocol(bad)


# ----------------------------------------------------------------------------------------------
# The normalised score

CPU, CLOUD, ORACLE = (300.0, 0.5, 0.0), (140.0, 0.4, 0.0), (36.0, 0.07, 0.0)


def test_the_better_baseline_scores_0_and_the_oracle_100():
    assert normalised_score(CLOUD, CPU, CLOUD, ORACLE) == 0.0
    assert normalised_score(ORACLE, CPU, CLOUD, ORACLE) == 100.0
    # the better baseline is chosen with its violations charged: here the CPU
    cheap_cloud_many_misses = (100.0, 0.9, 0.0)
    cpu = (110.0, 0.0, 0.0)
    assert normalised_score(cpu, cpu, cheap_cloud_many_misses, ORACLE) == 0.0


def test_a_violation_costs_one_request_at_the_cheaper_baseline():
    # w = min(300, 140) = 140 mJ; C0 = 140 + 140 * 0.4 = 196; C_oracle = 36 + 140 * 0.07 = 45.8
    same_energy_more_misses = (36.0, 0.17, 0.0)
    expected = 100 * (196 - (36 + 140 * 0.17)) / (196 - 45.8)
    assert normalised_score(same_energy_more_misses, CPU, CLOUD, ORACLE) == pytest.approx(expected)
    accuracy_miss = (36.0, 0.07, 0.1)
    assert normalised_score(accuracy_miss, CPU, CLOUD, ORACLE) == pytest.approx(expected)


def test_the_floor_bounds_scores_and_no_room_is_undefined():
    awful = (5000.0, 1.0, 1.0)
    assert normalised_score(awful, CPU, CLOUD, ORACLE) < -100
    assert normalised_score(awful, CPU, CLOUD, ORACLE, floor=-100.0) == -100.0
    assert math.isnan(normalised_score(CLOUD, CPU, CLOUD, CLOUD))


# ----------------------------------------------------------------------------------------------
# Determinism and the regression check


def test_every_ci_entry_has_a_stored_interval_on_every_quick_cell():
    quick = load_expected()["variants"]["quick"]["agents"]
    for entry in [e for e in PROTOCOL.references if e.ci]:
        assert set(quick[entry.name]["check"]) == {c.key for c in PROTOCOL.quick_cells}, entry.name


def test_the_non_learning_reference_results_hold(capsys):
    """``autoscale protocol --check``: rerun in this process, the stored results (made by another
    process, maybe another day) come back to within last-bit slack: same seeds, same scores."""
    rc = main(["protocol", "--check", "--agents", ",".join(CHEAP), "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert printed.strip().endswith("check passed")


@pytest.mark.slow
def test_the_learners_reference_results_hold():
    failures = check(names=LEARNERS)
    assert not failures, "\n".join(failures)


def perturbed_mi8pro(tmp_path):
    """A copy of the mi8pro profile with one number changed: CPU busy power 3.5 -> 3.85 W."""
    text = (config.DEVICES_DIR / "mi8pro.toml").read_text()
    assert text.count("busy_power_w = 3.5\n") == 1
    path = tmp_path / "mi8pro.toml"
    path.write_text(text.replace("busy_power_w = 3.5\n", "busy_power_w = 3.85\n"))
    return str(path)


@pytest.mark.slow
def test_changing_one_profile_number_fails_the_check_until_regenerated(tmp_path):
    profiles = {"mi8pro": perturbed_mi8pro(tmp_path)}
    failures = check(names=["random"], cells=[MI8], profiles=profiles)
    text = "\n".join(failures)
    assert f"random on {MI8}: score = " in text and "left its stored interval" in text
    assert f"random on {MI8}: energy_mj = " in text
    assert REGENERATE_COMMAND in text
    # a deliberate change regenerates the expected scores; then the check passes
    expected = tmp_path / "expected.json"
    shutil.copy(EXPECTED_FILE, expected)
    regenerate(quick=True, names=["random"], out=tmp_path / "regen", expected_path=expected,
               profiles=profiles, cells=[MI8], progress=False)
    assert check(names=["random"], cells=[MI8], profiles=profiles, expected_path=expected) == []
    # and the regenerated file no longer matches the unchanged world
    assert check(names=["random"], cells=[MI8], expected_path=expected)


def test_a_missing_entry_names_the_regeneration_command():
    failures = compare({"agents": {}}, {"agents": {}}, ["qlearning"])
    assert failures == [f"qlearning: no stored quick interval. If the change is deliberate, "
                        f"regenerate the expected scores in the same commit "
                        f"(`{REGENERATE_COMMAND} --quick`, or without --quick for the full grid) "
                        f"so the diff of agents/data/expected_v1.json shows what moved."]


# ----------------------------------------------------------------------------------------------
# A user's own agent, through the public entry point


class AlwaysCloudAgent(Agent):
    """A user's agent, defined here on the agent contract: offloads every request to the cloud
    GPU. Its scores must be exactly the stored fixed:cloud/gpu/fp32 baseline's."""

    name = "always-cloud"
    learns = False

    def __init__(self, env, seed=0):
        self.env, self.seed = env, seed
        self.action = env.unwrapped.target_index("cloud/gpu/fp32")

    def learn(self, total_timesteps, callback=None, progress_bar=False):
        return self

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return self.action, None

    def save(self, path):
        raise NotImplementedError("nothing to save: the policy is one constant")

    @classmethod
    def load(cls, path, env, **kwargs):
        return cls(env)


@pytest.mark.slow
def test_a_users_class_runs_the_quick_protocol_by_import_path(tmp_path, capsys):
    spec = f"{__name__}:AlwaysCloudAgent"
    rc = main(["protocol", "--agent", spec, "--quick", "--out", str(tmp_path), "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0
    # its row beside the reference table
    assert f"**{spec}** (yours)" in printed
    for ref in ("qlearning", "oracle", "fixed:cloud/gpu/fp32", "random"):
        assert f"| {ref} |" in printed
    doc = json.loads((tmp_path / "protocol.json").read_text())
    assert (doc["protocol"], doc["variant"]) == ("autoscale-bench-v1", "quick")
    assert doc["agents"][spec]["config"]["train_steps"] == 64_000
    mine = doc["agents"][spec]["cells"]
    cloud = load_expected()["variants"]["quick"]["agents"]["fixed:cloud/gpu/fp32"]["cells"]
    assert set(mine) == {c.key for c in PROTOCOL.quick_cells}
    for key in mine:
        assert mine[key]["score_mean"] == pytest.approx(cloud[key]["score_mean"], abs=1e-9)
        assert mine[key]["metrics"] == pytest.approx(cloud[key]["metrics"], rel=1e-9)
    # a submitted result is verified by rerunning the quick protocol: the two untouched cells
    # reproduce, the one whose score was edited does not
    doc["agents"][spec]["cells"][MI8]["score"] = [42.0]
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    failures = verify(tampered, progress=False)
    assert len(failures) == 1, failures
    assert failures[0].startswith(f"{spec} on {MI8}: score = ")
    assert "(stored 42.0000)" in failures[0]


def test_a_submission_of_another_protocol_version_is_refused(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({
        "protocol": "autoscale-bench-v0", "version": 0, "variant": "quick", "made_by": {},
        "agents": {}}))
    with pytest.raises(ProtocolError, match="old.json: made under autoscale-bench-v0 v0"):
        write_leaderboard(tmp_path / "page.md", tmp_path / "fig.png", results_dir=tmp_path)


def test_an_import_path_that_does_not_resolve_is_named():
    with pytest.raises(UnknownNameError, match="'agents.baselines:Nope'.*package.module:Class"):
        resolve_agent("agents.baselines:Nope")
    with pytest.raises(UnknownNameError, match="'no_such_module:Agent'"):
        resolve_agent("no_such_module:Agent")
    assert resolve_agent("qlearning").__name__ == "QLearningAgent"


def test_an_entry_with_other_bins_runs_the_same_requests(tmp_path):
    entry = [Entry("qlearning-fitted", "qlearning", features="fitted")]
    small = dataclasses.replace(PROTOCOL, train_steps=500)  # a short run: only the plumbing
    scored = run_entries(small, entry, "quick", tmp_path, cells=[MI8], progress=False)
    assert len(scored["qlearning-fitted"]) == 1
    assert -100 <= scored["qlearning-fitted"][0]["score"] <= 100


# ----------------------------------------------------------------------------------------------
# The leaderboard


def test_the_leaderboard_is_generated_between_markers_from_the_stored_results(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nhand-written text\n\n<!-- leaderboard:start -->\nold\n"
                    "<!-- leaderboard:end -->\n\nmore text\n")
    # a submitted result (here: the stored linucb row, relabelled) gets a row of its own
    expected = load_expected()
    linucb = expected["variants"]["quick"]["agents"]["linucb"]
    results = tmp_path / "results"
    results.mkdir()
    (results / "mine.json").write_text(json.dumps({
        "protocol": "autoscale-bench-v1", "version": 1, "variant": "quick",
        "made_by": linucb["made_by"], "agents": {"my-linucb": linucb}}))
    write_leaderboard(page, tmp_path / "leaderboard.png", results_dir=results)
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written text\n") and text.endswith("more text\n")
    assert "\nold\n" not in text
    quick = load_expected()["variants"]["quick"]["agents"]
    oracle = quick["oracle"]["overall"]["score_mean"]
    assert f"| oracle | 3 | {oracle:.1f} |" in text
    score = linucb["overall"]["score_mean"]
    assert f"| my-linucb (submitted) | 3 | {score:.1f} |" in text
    assert (tmp_path / "leaderboard.png").stat().st_size > 0
    write_leaderboard(page, tmp_path / "leaderboard.png", results_dir=results)
    assert page.read_text() == text  # regenerating changes nothing
