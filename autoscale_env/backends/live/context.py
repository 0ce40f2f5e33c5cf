"""The runtime context of the live backend, read from the real system.

AutoScale observes co-running CPU and memory use and the signal strength of its links. On a host:

* :class:`SystemMonitor` reads system CPU time and memory use through psutil and subtracts what
  *our own* processes used (this process and the loopback servers, which stand in for other
  machines), so the figures are the co-runners' share. The background load generators of the
  dynamic setting are co-runners on purpose and are counted.
* :func:`wireless_rssi_dbm` reads ``/proc/net/wireless`` when the host has a Wi-Fi interface;
  without one (servers, containers) the backend falls back to the scenario's RSSI schedule.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

__all__ = ["SystemMonitor", "wireless_rssi_dbm"]

PROC_WIRELESS = "/proc/net/wireless"


def wireless_rssi_dbm(path: str | os.PathLike[str] = PROC_WIRELESS) -> float | None:
    """Signal level (dBm) of the first Wi-Fi interface in ``path``, or None without one.

    The file has two header lines, then ``iface: status link level noise ...`` per interface;
    ``level`` is in dBm on every driver that reports dBm (a trailing ``.`` is common).
    """
    try:
        lines = Path(path).read_text().splitlines()[2:]
    except OSError:
        return None
    for line in lines:
        _, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 3:
            try:
                level = float(fields[2].rstrip("."))
            except ValueError:
                continue
            if level > 0:  # some drivers report 256-based unsigned values
                level -= 256.0
            if -120.0 <= level <= 0.0:
                return level
    return None


class SystemMonitor:
    """Co-running CPU utilisation and memory use of this host, excluding our own processes.

    Each :meth:`sample` covers the interval since the previous one (the first, since
    construction), like ``psutil.cpu_percent(interval=None)``.

    Args:
        own_pids: a callable returning the pids to exclude besides this process (the servers).
    """

    def __init__(self, own_pids: Callable[[], Iterable[int]] = tuple):
        self._own_pids = own_pids
        self._procs: dict[int, psutil.Process] = {}
        self._last: tuple[float, float, float] | None = self._read()
        self._counted = (0.0, 0.0, 0.0)  # CPU seconds of suspended-apart windows since a sample

    def suspend(self) -> None:
        """Stop counting CPU time (until :meth:`resume`): the next :meth:`sample` covers only
        the time outside suspended windows (the live backend suspends it while its load
        generators pause for a remote request). Idempotent."""
        if self._last is not None:
            now = self._read()
            self._counted = tuple(c + a - b for c, a, b in zip(self._counted, now, self._last))
            self._last = None

    def resume(self) -> None:
        """Count CPU time again from now (no-op unless suspended)."""
        if self._last is None:
            self._last = self._read()

    def _processes(self) -> list[psutil.Process]:
        pids = {os.getpid(), *self._own_pids()}
        for pid in list(self._procs):
            if pid not in pids:
                del self._procs[pid]
        out = []
        for pid in pids:
            try:
                if pid not in self._procs:
                    self._procs[pid] = psutil.Process(pid)
                out.append(self._procs[pid])
            except psutil.Error:
                self._procs.pop(pid, None)
        return out

    def _read(self) -> tuple[float, float, float]:
        """(total CPU seconds of all cores, busy CPU seconds, our processes' CPU seconds)."""
        t = psutil.cpu_times()
        total = sum(t)
        idle = t.idle + getattr(t, "iowait", 0.0)
        own = 0.0
        for p in self._processes():
            try:
                c = p.cpu_times()
                own += c.user + c.system
            except psutil.Error:  # a server that just died
                continue
        return total, total - idle, own

    def sample(self) -> tuple[float, float]:
        """``(co_cpu_pct, co_mem_pct)``: co-runners' share of all cores and of physical memory."""
        now = self._read()
        since = now if self._last is None else self._last  # suspended: nothing since suspend()
        d_total, d_busy, d_own = (c + a - b for c, a, b in zip(self._counted, now, since))
        self._counted = (0.0, 0.0, 0.0)
        if self._last is not None:
            self._last = now
        cpu = 100.0 * (d_busy - d_own) / d_total if d_total > 0 else 0.0
        mem = psutil.virtual_memory()
        # Only our private resident pages: RSS also counts file-backed shared pages (torch's
        # libraries, once per server process), which the kernel files under cache, not under
        # ``total - available``; subtracting them drove the share to 0 on a lightly used host.
        own_private = 0
        for p in self._processes():
            try:
                info = p.memory_info()
                own_private += info.rss - getattr(info, "shared", 0)
            except psutil.Error:
                continue
        mem_pct = 100.0 * (mem.total - mem.available - own_private) / mem.total
        return min(100.0, max(0.0, cpu)), min(100.0, max(0.0, mem_pct))
