"""Background load generators: the co-running apps of AutoScale's dynamic setting.

:class:`CpuLoad` runs ``n_procs`` child processes that each spin for ``duty_cycle`` of every
period and sleep the rest; :class:`MemoryLoad` runs one child that holds ``mb`` MiB resident.
Both can be retuned while running (the new level travels over the child's stdin), so the backend
can follow a dynamic load trace without restarting processes.

No orphans, by construction:

* each child watches its stdin, a pipe from this process, and exits at EOF, which the kernel
  delivers when this process closes the pipe *or dies*, even by SIGKILL;
* :meth:`stop` closes the pipe, waits, then terminates and finally kills, and always reaps;
* loads are stopped on context exit, on garbage collection and at interpreter exit (atexit).

The children run ``python -I -S -c <worker>``: they import nothing from this package (and not
torch), so they start in tens of milliseconds and use a few MiB beyond their load.
"""

from __future__ import annotations

import atexit
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
import weakref

__all__ = ["CpuLoad", "MemoryLoad", "stop_all"]

log = logging.getLogger(__name__)

# A worker reads new levels as text lines on stdin and exits at EOF. Kept free of imports beyond
# the standard library's core so it starts fast under `python -I -S`.
_CPU_WORKER = r"""
import os, select, sys, time
duty, period = float(sys.argv[1]), float(sys.argv[2]) / 1000.0
fd, buf = sys.stdin.fileno(), b""
while True:
    start = time.perf_counter()
    busy_until = start + duty * period
    while time.perf_counter() < busy_until:
        pass
    ready, _, _ = select.select([fd], [], [], max(0.0, start + period - time.perf_counter()))
    if ready:
        chunk = os.read(fd, 4096)
        if not chunk:
            sys.exit(0)
        buf += chunk
        *lines, buf = buf.split(b"\n")
        if lines:
            duty = min(1.0, max(0.0, float(lines[-1])))
"""

_MEMORY_WORKER = r"""
import os, select, sys
PAGE = 4096
def hold(mb):
    block = bytearray(mb << 20)
    block[::PAGE] = b"\x01" * len(range(0, len(block), PAGE))  # commit every page
    return block
block = hold(int(sys.argv[1]))
print("READY", flush=True)
fd, buf = sys.stdin.fileno(), b""
while True:
    ready, _, _ = select.select([fd], [], [], 1.0)
    if ready:
        chunk = os.read(fd, 4096)
        if not chunk:
            sys.exit(0)
        buf += chunk
        *lines, buf = buf.split(b"\n")
        if lines:
            block = None
            block = hold(int(lines[-1]))
            print("READY", flush=True)
    else:
        block[::PAGE] = b"\x02" * len(range(0, len(block), PAGE))  # keep the pages resident
"""

_LIVE: weakref.WeakSet[_ChildGroup] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def stop_all() -> None:
    """Stop every load generator this process started (registered with :mod:`atexit`)."""
    with _LIVE_LOCK:
        loads = list(_LIVE)
    for load in loads:
        load.stop()


atexit.register(stop_all)


class _ChildGroup:
    """Worker processes fed through stdin pipes; the shared start/stop/reap logic."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def _spawn(self, code: str, *args: object) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code, *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._procs.append(proc)
        with _LIVE_LOCK:
            _LIVE.add(self)
        return proc

    def _send(self, line: str) -> None:
        for proc in self._procs:
            assert proc.stdin is not None
            try:
                proc.stdin.write(f"{line}\n".encode())
                proc.stdin.flush()
            except (BrokenPipeError, ValueError) as e:  # child gone: stop() will reap it
                log.warning("load worker %d is gone: %s", proc.pid, e)

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [p.pid for p in self._procs if p.poll() is None]

    @property
    def running(self) -> bool:
        """True while at least one worker runs."""
        return bool(self.pids)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop and reap every worker (EOF, then SIGTERM, then SIGKILL). Safe to call twice."""
        with self._lock:
            procs, self._procs = self._procs, []
        for proc in procs:  # EOF first: every worker exits on its own within one period
            for stream in (proc.stdin, proc.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(1.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_procs", None):
            self.stop()

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError


class CpuLoad(_ChildGroup):
    """``n_procs`` processes each busy for ``duty_cycle`` of every ``period_ms``.

    The nominal co-running utilisation of the whole host is
    ``duty_cycle * n_procs / cpu_count`` (:attr:`cpu_util_pct`).

    Args:
        duty_cycle: busy fraction of each period, in [0, 1].
        n_procs: number of spinning processes (one core each at duty 1).
        period_ms: length of one busy+idle cycle; shorter is smoother, longer is cheaper.
    """

    def __init__(self, duty_cycle: float, n_procs: int = 1, period_ms: float = 50.0):
        super().__init__()
        self.duty_cycle = self._check(duty_cycle)
        if n_procs < 0:
            raise ValueError(f"n_procs must be >= 0, got {n_procs}")
        if period_ms <= 0:
            raise ValueError(f"period_ms must be positive, got {period_ms}")
        self.n_procs = n_procs
        self.period_ms = period_ms

    @staticmethod
    def _check(duty_cycle: float) -> float:
        if not 0.0 <= duty_cycle <= 1.0:
            raise ValueError(f"duty_cycle must be in [0, 1], got {duty_cycle}")
        return float(duty_cycle)

    @property
    def cpu_util_pct(self) -> float:
        """Nominal host CPU utilisation of this load, percent of all cores."""
        return 100.0 * self.duty_cycle * self.n_procs / (os.cpu_count() or 1)

    def start(self) -> CpuLoad:
        """Start the workers (no-op when already running)."""
        with self._lock:
            if not self._procs:
                for _ in range(self.n_procs):
                    self._spawn(_CPU_WORKER, self.duty_cycle, self.period_ms)
        return self

    def set_duty_cycle(self, duty_cycle: float) -> None:
        """Change the busy fraction of the running workers (takes effect within one period)."""
        self.duty_cycle = self._check(duty_cycle)
        with self._lock:
            self._send(repr(self.duty_cycle))


class MemoryLoad(_ChildGroup):
    """One process holding ``mb`` MiB of resident memory (every page touched, kept warm).

    Args:
        mb: mebibytes to hold.
        start_timeout_s: how long :meth:`start` and :meth:`set_mb` wait for the memory to be
            committed.
    """

    def __init__(self, mb: int, start_timeout_s: float = 30.0):
        super().__init__()
        self.mb = self._check(mb)
        self.start_timeout_s = start_timeout_s

    @staticmethod
    def _check(mb: int) -> int:
        if int(mb) != mb or mb < 0:
            raise ValueError(f"mb must be a non-negative integer, got {mb}")
        return int(mb)

    @property
    def mem_util_pct(self) -> float:
        """This load's share of the host's physical memory, percent."""
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return 100.0 * (self.mb << 20) / total

    def _await_ready(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(self.start_timeout_s):
                raise TimeoutError(f"memory load of {self.mb} MiB not ready in "
                                   f"{self.start_timeout_s} s")
            line = proc.stdout.readline()
        if not line.startswith(b"READY"):
            raise RuntimeError(f"memory load of {self.mb} MiB failed to start "
                               f"(exit code {proc.poll()})")

    def start(self) -> MemoryLoad:
        """Start the worker and wait until its memory is committed (no-op when running)."""
        with self._lock:
            if self._procs:
                return self
            proc = self._spawn(_MEMORY_WORKER, self.mb)
        try:
            self._await_ready(proc)
        except BaseException:
            self.stop()
            raise
        return self

    def set_mb(self, mb: int) -> None:
        """Resize the held memory and wait until it is committed."""
        self.mb = self._check(mb)
        with self._lock:
            self._send(str(self.mb))
            for proc in self._procs:
                self._await_ready(proc)
