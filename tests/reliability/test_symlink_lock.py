"""One lock per real file: a second recorder reaching a running recording's trace through a
symlink is refused, and the trace the first one writes stays loadable (issue: ``ln -s r.csv
link.csv``, then two ``record --force``, one per name, both reported success over NUL-filled
bytes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from autoscale_env.traces import format as traces
from agents.cli import main as cli_main
from autoscale_env.world.files import OutputLocked, PathLock

ROOT = Path(__file__).resolve().parents[2]


def _start_recording(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autoscale_env", "record", "--requests", "1000000", "--out",
         str(out), "--batch-size", "20", "--quiet", "--force"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_recorder_writing_through_a_symlink_into_a_running_recording_is_refused(tmp_path,
                                                                                   capsys):
    real, link = tmp_path / "r.csv", tmp_path / "link.csv"
    real.write_text("old\n")
    link.symlink_to(real.name)
    first = _start_recording(real)
    try:
        deadline = time.monotonic() + 60
        while real.stat().st_size < 20_000 and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.02)
        assert real.stat().st_size >= 20_000, "the first recording did not start in time"
        # the second recorder, through the link, with --force
        code = cli_main(["record", "--requests", "200", "--setting", "static", "--out", str(link), "--force",
                     "--quiet"])
        err = capsys.readouterr().err
        assert code == 2
        assert f"process {first.pid}" in err and f"a link to {real}" in err
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert link.is_symlink()  # untouched
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", traces.TraceCutWarning)
        trace = traces.load_trace(real)  # one writer's bytes: it loads
    assert trace.n_requests >= 20


def test_a_lock_taken_by_name_holds_against_the_link_and_the_other_way(tmp_path):
    real, link = tmp_path / "r.csv", tmp_path / "link.csv"
    link.symlink_to(real)  # dangling until the recording creates r.csv: still the same file
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from autoscale_env.world.files import PathLock; "
         f"lock = PathLock({str(real)!r}).acquire(); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked, match=rf"process {holder.pid}\b"):
            PathLock(link).acquire()
        with pytest.raises(OutputLocked):
            PathLock(real).acquire()
    finally:
        holder.stdin.close()
        holder.wait(10)
    PathLock(link).acquire().release()  # free once the holder is gone
