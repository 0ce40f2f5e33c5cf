"""Load generators: they load the host, follow new levels, and never leave a process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

psutil = pytest.importorskip("psutil")

from autoscale_env.backends.live.load import CpuLoad, MemoryLoad, stop_all  # noqa: E402

pytestmark = pytest.mark.live


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def gone(pids, timeout_s: float = 3.0) -> bool:
    """True once none of ``pids`` exists (zombies count as existing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_cpu_load_spins_follows_the_duty_cycle_and_stops():
    before = children()
    with CpuLoad(1.0, n_procs=1, period_ms=20) as load:
        assert len(load.pids) == 1 and load.running
        assert load.cpu_util_pct == pytest.approx(100.0 / os.cpu_count())
        proc = psutil.Process(load.pids[0])
        proc.cpu_percent()
        time.sleep(0.5)
        busy = proc.cpu_percent()
        load.set_duty_cycle(0.0)
        time.sleep(0.1)
        proc.cpu_percent()
        time.sleep(0.5)
        idle = proc.cpu_percent()
        # Relative, so a loaded host (which slows the spinner) cannot fail it: at duty 0 the child
        # sleeps whole periods, a few 10 ms ticks at most; at duty 1 it spins whenever scheduled.
        assert idle < 20 and busy > 3 * idle and busy > 5
        pids = load.pids
    assert not load.running
    assert gone(pids) and children() == before


def test_memory_load_holds_resident_memory_and_resizes():
    with MemoryLoad(64) as load:
        rss_mb = psutil.Process(load.pids[0]).memory_info().rss / 2**20
        assert rss_mb >= 60
        load.set_mb(8)
        rss_mb = psutil.Process(load.pids[0]).memory_info().rss / 2**20
        assert rss_mb < 40
        assert 0 < load.mem_util_pct < 100
        pids = load.pids
    assert gone(pids)


def test_stop_is_idempotent_and_restart_works():
    load = CpuLoad(0.1, n_procs=2, period_ms=20).start()
    first = load.pids
    load.start()  # no-op while running
    assert load.pids == first
    load.stop()
    load.stop()
    assert gone(first)
    load.start()
    assert len(load.pids) == 2 and set(load.pids).isdisjoint(first)
    second = load.pids
    stop_all()
    assert gone(second) and not load.running


def test_invalid_levels_are_refused():
    with pytest.raises(ValueError, match="duty_cycle"):
        CpuLoad(1.5)
    with pytest.raises(ValueError, match="n_procs"):
        CpuLoad(0.5, n_procs=-1)
    with pytest.raises(ValueError, match="mb"):
        MemoryLoad(-5)
    with CpuLoad(0.2) as load, pytest.raises(ValueError):
        load.set_duty_cycle(-0.1)


# A parent that starts loads, prints the workers' pids, then either exits without calling stop
# (atexit must clean up) or waits to be SIGKILLed (the workers must notice the closed pipe).
# Before exiting it waits for its stdin to close, so the test sees the workers alive first
# (otherwise a slow test process may read the pids after atexit already stopped them).
PARENT = textwrap.dedent("""
    import sys, time
    from autoscale_env.backends.live.load import CpuLoad, MemoryLoad
    cpu = CpuLoad(0.2, n_procs=2, period_ms=20).start()
    mem = MemoryLoad(16).start()
    print(" ".join(map(str, cpu.pids + mem.pids)), flush=True)
    if sys.argv[1] == "wait":
        time.sleep(60)
    else:
        sys.stdin.readline()
""")


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_no_orphans_when_the_parent_exits_or_is_killed(ending):
    parent = subprocess.Popen([sys.executable, "-c", PARENT,
                               "exit" if ending == "exit" else "wait"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 3 and all(psutil.pid_exists(p) for p in pids)
        if ending == "sigkill":
            os.kill(parent.pid, signal.SIGKILL)
        else:
            parent.stdin.close()  # let it exit: atexit must stop the workers
        parent.wait(10)
        # Orphans are re-parented (to init or a subreaper) and reaped there once they exit.
        assert gone(pids, timeout_s=5), [psutil.Process(p).status() for p in pids
                                         if psutil.pid_exists(p)]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        if not parent.stdin.closed:
            parent.stdin.close()
