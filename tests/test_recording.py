"""``autoscale record``: an interrupted Parquet recording says where its rows are and a rerun works;
two recordings into one trace cannot run at once."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from autoscale_env.traces import format as traces
from agents.cli import main as cli_main
from autoscale_env.traces.recorder import partial_path


def main(argv):
    """``autoscale record ARGV``."""
    return cli_main(["record", *argv])
from autoscale_env.world.errors import TraceFormatError

ROOT = Path(__file__).resolve().parents[1]


def start_recording(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autoscale_env", "record", "--requests", "1000000", "--out",
         str(out), "--batch-size", "20", "--quiet", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_bytes(path: Path, n: int, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (not path.exists() or path.stat().st_size < n) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    assert path.exists() and path.stat().st_size >= n, "the recording did not start in time"


@pytest.mark.slow
def test_interrupted_parquet_recording_says_where_its_rows_are_and_a_rerun_works(tmp_path,
                                                                                  capsys):
    pytest.importorskip("pyarrow")
    out = tmp_path / "r.parquet"
    proc = start_recording(out)
    try:
        wait_for_bytes(partial_path(out), 20_000, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert f"{out} was not written" in err and str(partial_path(out)) in err
    assert not out.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", traces.TraceCutWarning)
        flushed = traces.load_trace(partial_path(out))  # the message is true: it loads
    assert flushed.n_requests >= 20
    # a plain rerun works, and keeps the interrupted rows under a new name
    assert main(["--requests", "30", "--setting", "static", "--out", str(out), "--quiet"]) == 0
    assert traces.load_trace(out).n_requests == 30
    kept = list(tmp_path.glob("r.parquet.interrupted-*.csv.gz"))
    assert len(kept) == 1 and not partial_path(out).exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", traces.TraceCutWarning)
        assert traces.load_trace(kept[0]).n_requests == flushed.n_requests


@pytest.mark.slow
def test_a_second_recording_into_the_same_trace_is_refused_even_with_force(tmp_path):
    out = tmp_path / "r.csv.gz"
    first = start_recording(out, "--force")
    try:
        wait_for_bytes(out, 5_000, first)
        second = subprocess.run(
            [sys.executable, "-m", "autoscale_env", "record", "--requests", "50", "--out",
             str(out), "--quiet", "--force"], cwd=ROOT, capture_output=True, text=True,
            timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"process {first.pid}" in second.stderr and "in use" in second.stderr
        assert first.poll() is None  # the first one goes on
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", traces.TraceCutWarning)
        t = traces.load_trace(out)  # one writer's rows, intact
    assert t.n_requests >= 20 and t.complete
    assert not (tmp_path / ".r.csv.gz.lock").exists()  # released


def test_a_recording_says_under_which_conditions_it_ran(tmp_path):
    import hashlib

    from autoscale_env.world import config
    from autoscale_env.backends.sim import SimBackend
    from autoscale_env.traces.recorder import record

    out = record(SimBackend("mi8pro", "non_streaming", "static"), 50, tmp_path / "t.csv.gz",
                 seed=0, progress=False, batch_size=10)
    c = traces.load_trace(out).header.conditions
    links = hashlib.sha256((config.DATA_DIR / "links.toml").read_bytes()).hexdigest()
    assert c["link_model"] == f"sha256:{links}"  # which link model the trace was shaped to
    assert c["cpu_count"] >= c["cpus_used"] >= 1 and c["complete"] is True
    for key in ("load_average_before", "load_average_after"):
        assert len(c[key]) == 3 and min(c[key]) >= 0
    foreign = c["foreign_cpu"]
    assert 0.0 <= foreign["mean"] <= foreign["max_interval"] <= 1.0
    assert "governor" in c  # null where /sys/.../scaling_governor is unreadable (here: a VM)


def test_traces_without_conditions_load_and_bad_conditions_are_named(tmp_path):
    recorded = traces.load_trace("sim-mi8pro-non_streaming-static")
    # a trace recorded before traces carried their conditions
    path = traces.write_trace(recorded, tmp_path / "old.csv", header=dataclasses.replace(
        recorded.header, conditions=None))
    old = traces.load_trace(path)
    assert old.header.conditions is None
    bad = traces.write_trace(old, tmp_path / "bad.csv", header=dataclasses.replace(
        old.header, conditions={"foreign_cpu": {"mean": 1.7}}))
    with pytest.raises(TraceFormatError, match=r"conditions\.foreign_cpu\.mean.*1\.7"):
        traces.load_trace(bad)
