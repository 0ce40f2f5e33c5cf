"""Every size a user or a file can set has an upper bound tied to memory, checked in the library
before anything that size is allocated; the error names the option, the bound and why. And the
sizes that cannot mean anything (0 seeds, a negative seed, ``--max-states 0``) are usage errors.
"""

from __future__ import annotations

import os

import gymnasium as gym
import pytest

from agents.cli import main as cli_main

import autoscale_env  # noqa: F401  (registers AutoScale-v0)
from agents.experiments import sensitivity
from autoscale_env.tools import fit_bins
from autoscale_env.world import config
from autoscale_env.world.errors import ConfigError
from autoscale_env.world.observation import MAX_STATES, StateEncoder

CELLS = sensitivity.grid_cells(["mi8pro"], ["non_streaming"], ["static"])
SMALL = dict(method="sobol", trajectories=4, samples=32, sobol_top=2, tornado_top=10, episodes=12,
             seed=0, cells=CELLS)


def design(**changes):
    return sensitivity.make_config(**{**SMALL, **changes})


@pytest.mark.parametrize("option, value, bound", [
    ("trajectories", 10**9, "--trajectories 1000000000 means"),
    ("samples", 2**40, "--samples 1099511627776 means"),
    ("episodes", 10**9, f"--episodes 1000000000 is over the limit of {sensitivity.MAX_EPISODES}"),
])
def test_sensitivity_sizes_beyond_memory_are_refused_before_allocating(option, value, bound):
    with pytest.raises(ConfigError, match=bound) as info:
        design(**{option: value})
    assert "GiB" in str(info.value)  # and says why: the memory it would take


def test_the_sensitivity_bounds_admit_the_documented_designs():
    design(**sensitivity.FULL)
    design(episodes=sensitivity.MAX_EPISODES)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_a_sensitivity_seed_outside_numpy_and_salib_seeds_is_refused(seed):
    with pytest.raises(ConfigError, match="--seed must be an integer in 0..2\\*\\*32-1"):
        design(seed=seed)


def test_worker_counts_are_capped_at_the_cores_unless_forced():
    assert sensitivity.check_workers(4, cpus=4) == 4
    with pytest.raises(ConfigError, match="--workers 1000 is over the limit of 256"):
        sensitivity.check_workers(1000, cpus=4, force=True)
    with pytest.raises(ConfigError, match="more than the 4 cores here.*--force-workers"):
        sensitivity.check_workers(5, cpus=4)
    assert sensitivity.check_workers(5, cpus=4, force=True) == 5
    with pytest.raises(ConfigError, match="--workers must be an integer >= 1"):
        sensitivity.check_workers(0)


def test_sensitivity_run_refuses_too_many_workers_before_starting_any(tmp_path):
    pytest.importorskip("SALib")
    with pytest.raises(ConfigError, match="--force-workers"):
        sensitivity.run(design(), tmp_path / "s", workers=(os.cpu_count() or 1) + 1)
    assert not (tmp_path / "s").exists()  # nothing started


def test_sensitivity_cli_turns_a_negative_seed_into_a_usage_error(tmp_path, capsys):
    pytest.importorskip("SALib")
    assert cli_main(["sensitivity", "--quick", "--seed", "-1", "--out", str(tmp_path / "s")]) == 2
    assert "--seed must be an integer in 0..2**32-1" in capsys.readouterr().err


def test_a_fleet_beyond_memory_is_refused_before_any_phone_is_built():
    pytest.importorskip("pettingzoo")
    from autoscale_env.fleet import parallel_env
    from autoscale_env.fleet.env_args import MAX_PHONES
    with pytest.raises(ValueError, match=f"num_phones 100000 is over the limit of {MAX_PHONES}"):
        parallel_env(num_phones=10**5)


@pytest.fixture
def huge_features(tmp_path):
    """The issue's file: seven features of 1,500 edges each (1501**7 states)."""
    path = tmp_path / "huge.toml"
    path.write_text(fit_bins.features_toml([[float(i) for i in range(1500)]] * 7, "# huge"))
    return path


def test_a_state_space_past_the_bound_is_refused_before_flat_index_can_overflow(huge_features):
    specs = config.load_features(str(huge_features))
    with pytest.raises(ConfigError, match=f"over the limit of {MAX_STATES}"):
        StateEncoder(specs, tuple(config.load_workloads().values()))
    with pytest.raises(ConfigError, match="states"):
        gym.make("AutoScale-v0", features=str(huge_features))


def test_fit_bins_refuses_a_start_with_too_many_states(huge_features, tmp_path):
    with pytest.raises(ConfigError, match="over the limit"):
        fit_bins.edges_of(str(huge_features))
    assert cli_main(["fit-bins", "--start", str(huge_features), "--out",
                     str(tmp_path / "f.toml")]) == 2


@pytest.mark.parametrize("args, message", [
    (["--max-states", "0"], "--max-states must be in 1..1048576"),
    (["--max-states", "100"], "--max-states 100 is below the 1024 states of --start paper"),
    (["--requests", "0"], "--requests must be an integer >= 1"),
    (["--seeds", "0"], "--seeds must be an integer >= 1"),
    (["--requests", "10000000"], "over the limit of 4000000"),
])
def test_fit_bins_sizes_that_cannot_work_are_usage_errors(args, message, tmp_path, capsys):
    assert cli_main(["fit-bins", *args, "--out", str(tmp_path / "f.toml")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "f.toml").exists()


def test_fit_bins_library_refuses_a_max_states_below_the_start():
    with pytest.raises(ConfigError, match="--max-states must be in 1..1048576"):
        fit_bins.check_sizes(1, 1, 1, max_states=0)
    with pytest.raises(ConfigError, match="--max-states 100 is below the 1024 states"):
        fit_bins.fit(None, fit_bins.edges_of("paper"), max_states=100)  # before any sample
    with pytest.raises(ConfigError, match="--seeds must be an integer >= 1"):
        fit_bins.collect([("mi8pro", "non_streaming", "static")], [], 10)


def test_gap_with_zero_seeds_is_a_usage_error(capsys):
    assert cli_main(["gap", "--trace", "x.csv", "--profile", "mi8pro", "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
