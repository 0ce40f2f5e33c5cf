"""autoscale calibrate: a profile fitted from a trace reproduces the world that made the trace,
says what it could not identify, and refuses traces that cannot support a fit."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from agents.cli import main as cli_main

from autoscale_env.tools import calibrate as cal_mod
from autoscale_env.world import config
from autoscale_env.backends.sim import SimBackend
from autoscale_env.tools.calibrate import CalibrationError, calibrate, write_profile
from autoscale_env.traces.recorder import record
from autoscale_env.traces.format import load_trace, write_trace


@pytest.fixture(scope="module")
def sim_trace(tmp_path_factory):
    """400 requests of the mi8pro sim (dynamic): a world whose true parameters are known."""
    out = tmp_path_factory.mktemp("trace") / "sim-mi8pro.csv.gz"
    record(SimBackend("mi8pro", "non_streaming", "dynamic"), 400, out, seed=0, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def fitted(sim_trace):
    return calibrate([sim_trace], base="moto_x_force", name="refit", bootstrap=8)


@pytest.mark.slow
def test_fit_recovers_the_simulated_world(fitted):
    truth = config.load_device("mi8pro")
    for net, units in fitted.base_latency_ms.items():
        for unit, e in units.items():
            # noise sigma 0.05 over ~40 requests per network: the median is within a few %
            assert e.value == pytest.approx(truth.latency_ms[net][unit], rel=0.06), (net, unit)
            assert e.fitted and e.low < e.high  # 8 replicates: a rough but real interval
    for proc in ("cpu", "gpu", "dsp"):
        for key in ("cpu_interference", "mem_interference"):
            e = fitted.interference[proc][key]
            assert e.fitted, (proc, key)
            assert e.value == pytest.approx(getattr(truth.processors[proc], key), abs=0.12)
    for target, e in fitted.noise_sigma.items():  # settings.toml: dynamic local sigma
        assert 0.03 < e.value < 0.08, target


def test_server_latency_is_the_measured_latency_less_the_link_model(fitted):
    edge = config.load_device("galaxy_tab_s6")
    for net, e in fitted.server_latency_ms["edge/cpu/fp32"].items():
        truth = edge.latency_ms[net]["cpu/fp32"] + edge.overhead_ms
        # the link's goodput noise (sigma 0.1 on ~100 ms transfers) blurs the small ones
        assert e.value == pytest.approx(truth, rel=0.1, abs=2.0), net
    for link, e in fitted.link_goodput_scale.items():
        assert e.value == pytest.approx(1.0, abs=0.1), link  # the sim uses the link model itself


def test_what_the_trace_cannot_identify_is_kept_and_said(fitted):
    base = config.load_device("moto_x_force")
    power = fitted.power["cpu"]["busy_power_w"]
    assert not power.fitted and power.value == base.processors["cpu"].busy_power_w
    assert "'model', not measured" in power.note
    assert any("busy_power_w" in k for k in fitted.kept)


def test_written_profile_loads_and_runs_in_the_sim(fitted, tmp_path):
    paths = write_profile(fitted, tmp_path / "refit.toml")
    assert {p.name for p in paths} == {"refit.toml", "refit_edge.toml", "refit_cloud.toml",
                                       "refit.calibration.json"}
    profile = config.load_device(str(tmp_path / "refit.toml"))
    assert [str(t) for t in profile.targets] == fitted.targets
    assert profile.edge.endswith("refit_edge.toml")
    text = (tmp_path / "refit.toml").read_text()
    assert 'fitted from sim-mi8pro (400 requests)' in text
    assert "not in the trace: base moto_x_force value" in text  # mbert, lstm_nmt
    sim = SimBackend(str(tmp_path / "refit.toml"), "non_streaming", "dynamic")
    sim.reset(np.random.default_rng(0))
    assert np.isfinite(sim.next_block().latency_ms).all()
    with pytest.raises(FileExistsError, match="--force"):
        write_profile(fitted, tmp_path / "refit.toml")


def test_partial_trace_is_refused_naming_the_missing_outcomes(sim_trace, tmp_path):
    t = load_trace(sim_trace)
    lat = t.latency_ms.copy()
    lat[::2, 1] = np.nan  # local/cpu/int8 logged only every other request
    partial = dataclasses.replace(t, latency_ms=lat)
    path = write_trace(partial, tmp_path / "partial.csv.gz",
                       header=dataclasses.replace(t.header, coverage="partial"))
    with pytest.raises(CalibrationError, match=r"partial.*local/cpu/int8 in 200 of 400 requests"):
        calibrate([str(path)], bootstrap=0)


def test_short_trace_is_refused_naming_how_many_more(sim_trace, tmp_path):
    t = load_trace(sim_trace)
    short = dataclasses.replace(t, **{f.name: getattr(t, f.name)[:60] for f in
                                      dataclasses.fields(t) if f.name not in
                                      ("path", "header", "targets", "workloads")})
    path = write_trace(short, tmp_path / "short.csv.gz")
    with pytest.raises(CalibrationError, match="60 requests; calibrate needs at least 100 "
                                               r"\(--min-requests\), 40 more"):
        calibrate([str(path)], bootstrap=0)
    with pytest.raises(CalibrationError, match=r"too few requests of .*\(\d\).*at least 50 per"):
        calibrate([str(path)], bootstrap=0, min_requests=10, min_per_network=50)


def test_cli_refuses_with_a_message_and_exit_code_2(sim_trace, tmp_path, capsys):
    code = cli_main(["calibrate", "--trace", sim_trace, "--out", str(tmp_path / "x.toml"),
                         "--min-requests", "1000", "--bootstrap", "0", "--quiet"])
    assert code == 2
    assert "400 requests; calibrate needs at least 1000" in capsys.readouterr().err
    assert not (tmp_path / "x.toml").exists()


@pytest.mark.slow
def test_model_energy_of_a_live_trace_identifies_cpu_interference_from_busy_time():
    # The live backend's energy is the mi8pro power model of the measured CPU (busy) time and
    # wall time, so latency / busy time, the stretch from co-running load, can be read back.
    fitted = calibrate(["live-host-non_streaming-dynamic"], bootstrap=3, min_per_network=5)
    e = fitted.interference["cpu"]["cpu_interference"]
    assert e.fitted and "busy time read back from the mi8pro power model" in e.note
    assert 0.0 < e.value <= 4 * cal_mod.MAX_INTERFERENCE and e.low <= e.high
    power = fitted.power["cpu"]["busy_power_w"]
    assert not power.fitted  # model energy still identifies no watts


def test_bundled_host_profile_is_fitted_from_the_bundled_live_traces():
    import gymnasium as gym

    profile = config.load_device("host")
    assert [str(t) for t in profile.targets] == [
        "local/cpu/fp32", "local/cpu/int8", "edge/cpu/fp32", "cloud/cpu/fp32"]
    text = open(profile.path).read()
    assert "fitted from live-host-non_streaming-dynamic + live-host-non_streaming-static" in text
    assert config.load_device(profile.edge).name == "host_edge"
    env = gym.make("AutoScale-v0", device="host")  # the sim, on the fitted world
    assert type(env.unwrapped.backend) is SimBackend
    env.reset(seed=0)
    _, _, _, _, info = env.step(0)
    assert info["latency_ms"] > 0 and info["energy_source"] == "model"


# --------------------------------------------------------------------------------------------
# Recording conditions: a trace recorded on a busy machine is refused, naming the load

BURN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end:\n    pass\n"


def start_foreign_burners(n: int, seconds: float) -> list[int]:
    """Start ``n`` bounded busy loops that are *not* descendants of this process (an intermediate
    process starts them in their own session and exits), as another user's job would be. They do
    not inherit the intermediate's output pipes, or waiting for it would wait for them."""
    code = ("import subprocess, sys\n"
            f"ps = [subprocess.Popen([sys.executable, '-c', {BURN.format(s=seconds)!r}], "
            f"start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) "
            f"for _ in range({n})]\n"
            "print(' '.join(str(p.pid) for p in ps))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    return [int(pid) for pid in out.stdout.split()]


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="foreign load is read from /proc")
def test_a_trace_recorded_beside_a_cpu_burner_is_refused_naming_the_load(tmp_path):
    cpus = len(os.sched_getaffinity(0))
    if cpus > 16:
        pytest.skip(f"{cpus} CPUs: burning all of them is too heavy for a unit test")
    pids = start_foreign_burners(cpus, seconds=60.0)  # killed as soon as the recording ends
    try:
        time.sleep(0.5)  # the burners are running
        # A sim recording labelled measured: the recorder measures foreign load whatever the
        # backend, and calibrate refuses only measured traces (host load cannot change a sim).
        # enough requests that the recording spans many 10 ms clock ticks of /proc/stat
        out = record(SimBackend("mi8pro", "non_streaming", "dynamic"), 2_000,
                     tmp_path / "busy.csv.gz", seed=0, progress=False,
                     provenance={"kind": "measured"})
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    foreign = load_trace(out).header.conditions["foreign_cpu"]["mean"]
    assert foreign > cal_mod.MAX_FOREIGN_CPU  # every CPU had a burner on it
    with pytest.raises(CalibrationError, match=rf"foreign CPU load {foreign * 100:.1f} % of "
                                               rf"{cpus} CPU\(s\).*exceeds 10 %.*--force"):
        calibrate([str(out)], bootstrap=0)


def with_conditions(trace: str, path, kind: str, **conditions) -> str:
    t = load_trace(trace)
    header = dataclasses.replace(t.header, conditions=conditions,
                                 provenance={**t.header.provenance, "kind": kind})
    return str(write_trace(t, path, header=header))


def test_a_quiet_recording_passes_and_force_fits_a_loaded_one_with_a_warning(sim_trace,
                                                                             tmp_path):
    quiet = with_conditions(sim_trace, tmp_path / "quiet.csv.gz", "measured", cpus_used=4,
                            foreign_cpu={"mean": 0.02, "max_interval": 0.05},
                            load_average_before=[0.1, 0.2, 0.1])
    assert cal_mod.check_conditions([load_trace(quiet)]) == []
    busy = with_conditions(sim_trace, tmp_path / "busy.csv.gz", "measured", cpus_used=2,
                           foreign_cpu={"mean": 0.47, "max_interval": 0.92},
                           load_average_before=[3.9, 3.1, 2.0],
                           load_average_after=[4.2, 3.3, 2.1])
    with pytest.raises(CalibrationError, match=r"foreign CPU load 47\.0 % of 2 CPU\(s\).*"
                                               r"busiest interval 92\.0 %.*3\.9/3\.1/2 before"):
        cal_mod.check_conditions([load_trace(busy)])
    notes = cal_mod.check_conditions([load_trace(busy)], force=True)
    assert len(notes) == 1 and notes[0].startswith("FORCED: ") and "47.0 %" in notes[0]
    # a simulated trace is never refused (host load does not change a simulated outcome) ...
    sim = with_conditions(sim_trace, tmp_path / "sim.csv.gz", "simulated",
                          foreign_cpu={"mean": 0.9, "max_interval": 1.0})
    assert cal_mod.check_conditions([load_trace(sim)]) == []
    # ... and a measured one without conditions is fitted with a note that they are unknown
    old = with_conditions(sim_trace, tmp_path / "old.csv.gz", "measured")
    assert "foreign load unknown" in cal_mod.check_conditions([load_trace(old)])[0]


def test_forced_fit_carries_the_warning_into_its_report(sim_trace, tmp_path, capsys):
    busy = with_conditions(sim_trace, tmp_path / "busy.csv.gz", "measured", cpus_used=2,
                           foreign_cpu={"mean": 0.47, "max_interval": 0.92})
    out = tmp_path / "b.toml"
    assert cli_main(["calibrate", "--trace", busy, "--out", str(out), "--bootstrap", "0",
                         "--quiet"]) == 2
    assert "foreign CPU load 47.0 %" in capsys.readouterr().err and not out.exists()
    assert cli_main(["calibrate", "--trace", busy, "--out", str(out), "--bootstrap", "0", "--quiet",
                         "--force"]) == 0
    assert "WARNING: FORCED:" in capsys.readouterr().out
    assert "# WARNING: FORCED: " in out.read_text()
    report = json.loads((tmp_path / "b.calibration.json").read_text())
    assert report["warnings"][0].startswith("FORCED: ") and report["conditions"][busy]


def test_the_record_names_each_trace_as_it_was_given():
    # a bundled name stays a name (not the install's absolute path) in both places it appears
    names = ["live-host-non_streaming-static"]
    cal = calibrate(names, name="host", bootstrap=0)
    assert cal.traces == names
    assert list(cal.conditions) == names
    assert cal.conditions[names[0]]["foreign_cpu"]["mean"] < 0.1
