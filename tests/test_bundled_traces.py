"""The bundled sim traces show exactly what the current sim shows; drift fails, naming the fix."""

from __future__ import annotations

import dataclasses

import pytest

from agents.cli import main as cli_main

from autoscale_env.world import config

from autoscale_env.tools import bundled_traces as sim_traces
from autoscale_env.tools.bundled_traces import REGENERATE_COMMAND
from conftest import rollout

ONE = "sim-mi8pro-non_streaming-static"


def check(names=None) -> None:
    problems = sim_traces.stale(names)
    assert not problems, sim_traces.stale_message(problems)


@pytest.mark.slow
def test_one_bundled_sim_trace_matches_the_current_sim():
    check([ONE])


@pytest.mark.slow
def test_every_bundled_sim_trace_matches_the_current_sim():
    check()


def test_replaying_a_bundled_trace_shows_what_the_sim_shows():
    name = "sim-mi8pro-non_streaming-dynamic"
    sim = rollout(0, 250, device="mi8pro", scenario="non_streaming", setting="dynamic")
    assert repr(rollout(0, 250, backend="replay", trace=name)) == repr(sim)


def test_changing_one_profile_number_fails_the_check_with_the_regenerate_command(monkeypatch):
    real = config.load_device

    def perturbed(name_or_path):
        profile = real(name_or_path)
        if profile.name != "mi8pro":
            return profile
        return dataclasses.replace(profile, base_power_w=profile.base_power_w + 0.01)

    monkeypatch.setattr(config, "load_device", perturbed)
    with pytest.raises(AssertionError) as failure:
        check([ONE])
    assert REGENERATE_COMMAND in str(failure.value) and ONE in str(failure.value)


@pytest.mark.slow
def test_regenerate_command_writes_traces_that_pass_the_check(tmp_path, monkeypatch):
    monkeypatch.setattr(sim_traces, "cells", lambda: [("moto_x_force", "translation", "static")])
    assert cli_main(["regenerate-traces", "--dir", str(tmp_path), "--quiet"]) == 0
    written = tmp_path / "sim-moto_x_force-translation-static.csv.gz"
    bundled = sim_traces.traces.load_trace("sim-moto_x_force-translation-static")
    fresh = sim_traces.traces.load_trace(written)
    assert fresh.latency_ms.tobytes() == bundled.latency_ms.tobytes()
