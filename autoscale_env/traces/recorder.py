"""Record traces from any backend: ``autoscale record`` / ``scripts/record_traces.py``.

:func:`record` drives a backend the way the environment does and writes every target's outcome of
every request (a *full* trace, see :mod:`autoscale_env.traces.format`):

* blocks that carry outcome matrices (``sim``) are written as they are;
* blocks without them (``live``) get ``backend.execute(block, i, a)`` for every target ``a`` of
  every request ``i``; a request where some target's outcome is not a finite number is skipped
  (and logged), so the trace stays full.

The random generator is the one ``env.reset(seed=seed)`` would create, and the backend is reset
every ``episode_requests`` requests (default: the reset observation plus ``MAX_EPISODE_STEPS``
steps, one episode of ``gym.make("AutoScale-v0")``) with that same generator, as the environment
does when an episode is truncated. A sim trace therefore holds exactly the requests and outcomes
that ``gym.make("AutoScale-v0", backend="sim", ...)`` shows after ``reset(seed=seed)`` followed
by plain ``reset()`` at every truncation, and replaying it with the same actions reproduces that
run bit for bit (``tests/backends/test_replay.py`` checks it).

Rows are written append-only and flushed and synced every ``batch_size`` requests, so a recording
killed at any moment leaves a file that loads (all complete rows; a torn last line is dropped
with a warning). An existing file is never overwritten without ``force``.

Every recording also says under which conditions it ran (the header's ``conditions``, see
:class:`HostConditions`): the load average before and after, the CPU count and governor, the share
of CPU time that processes *outside* the recording's own process tree used while it ran (other
users' jobs; the live backend's servers and load generators are children of the recorder and
count as its own), and the link model's version. The header is written first with what is known
then (``complete: false``) and rewritten atomically with the rest when the recording ends, so a
killed recording still says it was cut. ``autoscale calibrate`` reads the foreign share to refuse
a trace recorded on a busy machine.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import logging
import math
import os
import platform
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from autoscale_env.world.types import MAX_EPISODE_STEPS

from autoscale_env import version

from autoscale_env.world import config

from autoscale_env.traces import format as traces
from autoscale_env.world.types import Backend, RequestBlock
from autoscale_env.world.files import PathLock

log = logging.getLogger(__name__)

#: Requests per recorded episode: one ``gym.make`` episode (reset observation + steps).
DEFAULT_EPISODE_REQUESTS = MAX_EPISODE_STEPS + 1
#: Requests between flushes (each flush is an ``fsync``; a kill loses at most this many).
DEFAULT_BATCH_SIZE = 100


def record(backend: Backend, n_requests: int, out: str | os.PathLike, *, seed: int,
           force: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
           episode_requests: int | None = DEFAULT_EPISODE_REQUESTS, progress: bool = True,
           provenance: dict[str, Any] | None = None) -> Path:
    """Record ``n_requests`` requests of ``backend`` with every target's outcome to ``out``.

    Args:
        backend: any :class:`~autoscale_env.world.types.Backend` (it is reset here and not closed).
        n_requests: how many requests to write.
        out: ``.csv``, ``.csv.gz`` or ``.parquet``. Parquet cannot be appended to, so it is
            recorded to ``<out>.partial.csv.gz`` first and converted at the end (a killed
            recording leaves that file, which loads; the next recording into ``out`` keeps it
            as ``<out>.interrupted-<UTC time>.csv.gz`` and starts afresh).
        seed: seeds the generator exactly as ``env.reset(seed=seed)`` does.
        force: replace an existing ``out``.
        batch_size: requests per flush + fsync.
        episode_requests: reset the backend every this many requests (None or 0: never, one
            continuous stream).
        progress: show a tqdm progress bar on stderr.
        provenance: extra provenance fields for the header (merged over the derived ones).

    Returns:
        The path written.

    Raises:
        FileExistsError: ``out`` exists and ``force`` is false.
        OutputLocked: another process is recording into ``out`` (its PID is named).
    """
    out = Path(out)
    n_requests = int(n_requests)
    if n_requests < 1:
        raise ValueError(f"n_requests must be >= 1, got {n_requests}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    episode = int(episode_requests or 0) or None
    if not out.name.endswith(traces.SUFFIXES):
        raise ValueError(f"{out}: the output must end in {', '.join(traces.SUFFIXES)}")
    # One writer per trace: a second recording into the same file (even with --force) fails
    # here, naming the first one's PID, instead of truncating the file under it.
    with PathLock(out, what="trace"):
        return _record(backend, n_requests, out, seed=seed, force=force, batch_size=batch_size,
                       episode=episode, progress=progress, provenance=provenance)


def partial_path(out: str | os.PathLike) -> Path:
    """Where a Parquet recording streams its rows until it is converted at the end."""
    out = Path(out)
    return out.with_name(out.name + ".partial.csv.gz")


def _record(backend: Backend, n_requests: int, out: Path, *, seed: int, force: bool,
            batch_size: int, episode: int | None, progress: bool,
            provenance: dict[str, Any] | None) -> Path:
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists; refusing to overwrite a recording "
                              f"(pass force=True / --force to replace it)")
    parquet = out.name.endswith(".parquet")
    stream = partial_path(out) if parquet else out
    if parquet:
        traces._import_pyarrow()  # fail before recording, not after
        if stream.exists():  # an interrupted run's rows (we hold the lock: nobody is writing)
            kept = out.with_name(f"{out.name}.interrupted-"
                                 f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.csv.gz")
            os.replace(stream, kept)
            log.warning("%s was left by an interrupted recording; kept as %s (it loads as a "
                        "trace) and recording afresh", stream, kept)

    rng, _ = seeding.np_random(int(seed))  # the generator env.reset(seed=seed) creates
    host = HostConditions()
    header = describe(backend, seed=int(seed), episode_requests=episode, n_requests=n_requests,
                      provenance=provenance)
    header = dataclasses.replace(header, conditions=host.start())
    gap_s = getattr(getattr(backend, "scenario", None), "request_gap_ms", 0.0) / 1000.0
    bar = _progress(n_requests, progress, out)
    written = skipped = 0
    with traces.TraceWriter(stream, header, workloads=backend.workloads, force=force) as writer:
        try:
            backend.reset(rng)
            block: RequestBlock | None = None
            pos = in_episode = pending = 0
            while written + skipped < n_requests:
                if episode and in_episode == episode:
                    backend.reset(rng)  # same generator, as the env after a truncation
                    block, in_episode = None, 0
                if block is None or pos == len(block):
                    block, pos = backend.next_block(), 0
                    if len(block) == 0:
                        raise RuntimeError(f"{type(backend).__name__}.next_block() returned no "
                                           f"requests")
                take = min(len(block) - pos, n_requests - written - skipped,
                           batch_size - pending, (episode - in_episode) if episode else math.inf)
                first = written + skipped  # request id = position in the recorded stream
                if block.latency_ms is not None:
                    part = slice(pos, pos + take)
                    ids = np.arange(first, first + take)
                    writer.write_requests(
                        request=ids, timestamp_s=ids * gap_s, network=block.network[part],
                        co_cpu_pct=block.co_cpu_pct[part], co_mem_pct=block.co_mem_pct[part],
                        rssi_wifi_dbm=block.rssi_wifi_dbm[part],
                        rssi_p2p_dbm=block.rssi_p2p_dbm[part], latency_ms=block.latency_ms[part],
                        energy_mj=block.energy_mj[part], accuracy=block.accuracy[part],
                        energy_source=block.energy_source)
                    written += take
                else:
                    ok = _execute_all(backend, block, pos, take, first, writer)
                    written += ok
                    skipped += take - ok
                pos += take
                in_episode += take
                pending += take
                bar.update(take)
                if pending >= batch_size:
                    writer.flush()
                    host.sample()
                    pending = 0
        finally:
            bar.close()
    if skipped:
        log.warning("%s: skipped %d of %d requests whose outcome on some target was not a "
                    "finite number", stream, skipped, n_requests)
    # The conditions are complete only now: rewrite the header (atomically; the rows are the
    # ones just written, read back bit for bit).
    final = dataclasses.replace(header, conditions=host.finish())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", traces.TraceCutWarning)
        recorded = traces.load_trace(stream)
    traces.write_trace(recorded, out, header=final, force=True)
    if parquet:
        stream.unlink()
    return out


# --------------------------------------------------------------------------------------------
# Recording conditions


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def link_model_version() -> str:
    """``sha256:<hex>`` of ``links.toml``: which link model the live backend shaped transfers to
    (a trace recorded under another link model does not match the current sim's remote targets)."""
    return "sha256:" + hashlib.sha256((config.DATA_DIR / "links.toml").read_bytes()).hexdigest()


def cpu_governors() -> dict[str, int] | None:
    """``{governor: number of CPUs}`` from ``/sys/.../cpufreq/scaling_governor``, or None where
    unreadable (containers, VMs without cpufreq, other systems)."""
    out: dict[str, int] = {}
    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")):
        text = _read(path)
        if text and text.strip():
            out[text.strip()] = out.get(text.strip(), 0) + 1
    return out or None


def _cpu_jiffies(cpus: set[int] | None) -> tuple[int, int] | None:
    """(busy, total) clock ticks of ``cpus`` (all when None) since boot, from ``/proc/stat``."""
    text = _read("/proc/stat")
    if text is None:
        return None
    busy = total = 0
    seen = False
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        try:
            cpu = int(name[3:])
            v = [int(x) for x in fields[:8]]
        except ValueError:
            continue
        if cpus is not None and cpu not in cpus:
            continue
        v += [0] * (8 - len(v))
        user, nice, system, idle, iowait, irq, softirq, steal = v
        b = user + nice + system + irq + softirq + steal  # guest time is inside user already
        busy += b
        total += b + idle + iowait
        seen = True
    return (busy, total) if seen else None


def _tree_jiffies(root: int) -> int | None:
    """CPU clock ticks (user + system, plus reaped children's) of ``root`` and its live
    descendants, from ``/proc/<pid>/stat``; None without ``/proc``."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        text = _read(f"/proc/{pid}/stat")
        if not text:
            continue
        rest = text[text.rfind(")") + 2:].split()  # the command name may hold spaces
        try:  # fields 4 (ppid) and 14-17 (utime, stime, cutime, cstime) of proc(5)
            parent[pid] = int(rest[1])
            ticks[pid] = sum(int(x) for x in rest[11:15])
        except (IndexError, ValueError):
            continue
    if root not in ticks:
        return None
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total


class HostConditions:
    """The machine's state over a recording: what the header's ``conditions`` say.

    ``foreign_cpu`` is the share of the CPUs this process may run on (its affinity set) that
    processes outside its own tree kept busy: ``(busy ticks of those CPUs - ticks of this process
    and its descendants) / all ticks of those CPUs`` between two samples. The recorder samples at
    the start, after every flushed batch and at the end; ``mean`` covers the whole recording and
    ``max_interval`` the busiest interval between samples. The recording's own work (the sim,
    inference, the live backend's servers and load generators, which are its children) is not
    foreign; another user's job is. Fields that cannot be read on this system are null.
    """

    #: Shortest interval between samples that counts towards ``max_interval`` (the kernel counts
    #: CPU time in ticks of 1-10 ms; shorter intervals would report a tick's noise as a share).
    MIN_INTERVAL_S = 1.0

    def __init__(self):
        self.pid = os.getpid()
        try:
            self.cpus: set[int] | None = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = None
        self._first: tuple[float, int, int, int] | None = None
        self._last: tuple[float, int, int, int] | None = None
        self._max: float | None = None
        self._intervals = 0
        self._before: list[float] | None = None

    def _now(self) -> tuple[float, int, int, int] | None:
        cpu = _cpu_jiffies(self.cpus)
        own = _tree_jiffies(self.pid)
        if cpu is None or own is None:
            return None
        return (time.monotonic(), cpu[0], cpu[1], own)

    @staticmethod
    def _share(a: tuple[float, int, int, int], b: tuple[float, int, int, int]) -> float | None:
        d_busy, d_total, d_own = b[1] - a[1], b[2] - a[2], b[3] - a[3]
        if d_total <= 0:
            return None
        return min(1.0, max(0.0, (d_busy - d_own) / d_total))

    @staticmethod
    def _loadavg() -> list[float] | None:
        try:
            return [round(x, 2) for x in os.getloadavg()]
        except (AttributeError, OSError):
            return None

    def static(self) -> dict[str, Any]:
        """What does not change over a recording: CPUs, governor, link model, platform."""
        return {
            "cpu_count": os.cpu_count(),
            "cpus_used": len(self.cpus) if self.cpus is not None else None,
            "governor": cpu_governors(),
            "link_model": link_model_version(),
            "platform": platform.platform(),
        }

    def start(self) -> dict[str, Any]:
        """Take the first sample; the conditions known before the first request."""
        self._before = self._loadavg()
        self._first = self._last = self._now()
        self._started = time.monotonic()
        return {**self.static(), "load_average_before": self._before, "complete": False}

    def sample(self) -> None:
        """Close an interval (called after every flushed batch)."""
        now = self._now()
        if now is None or self._last is None:
            return
        if now[0] - self._last[0] < self.MIN_INTERVAL_S:  # a few clock ticks say nothing yet
            return
        share = self._share(self._last, now)
        if share is not None:
            self._max = share if self._max is None else max(self._max, share)
            self._intervals += 1
        self._last = now

    def finish(self) -> dict[str, Any]:
        """The complete conditions, to be written into the header at the end of the recording."""
        end = self._now()
        if end is not None and self._last is not None and end[2] > self._last[2]:
            share = self._share(self._last, end)  # the last interval, however short
            if share is not None and (self._max is None
                                      or end[0] - self._last[0] >= self.MIN_INTERVAL_S):
                self._max = share if self._max is None else max(self._max, share)
            self._intervals += 1
        mean = self._share(self._first, end) if self._first and end else None
        if mean is not None and self._max is None:
            self._max = mean
        foreign = None if mean is None else {
            "mean": round(mean, 4), "max_interval": round(self._max, 4),
            "intervals": max(self._intervals, 1),
            "method": "/proc/stat busy ticks of the CPUs in this process's affinity set minus "
                      "the ticks of this process and its descendants (/proc/<pid>/stat)",
        }
        return {**self.static(), "load_average_before": self._before,
                "load_average_after": self._loadavg(),
                "duration_s": round(time.monotonic() - self._started, 3),
                "foreign_cpu": foreign, "complete": True}


def _execute_all(backend: Backend, block: RequestBlock, pos: int, take: int, first: int,
                 writer: traces.TraceWriter) -> int:
    """Run requests ``pos .. pos+take-1`` of ``block`` on every target.

    Returns:
        How many requests were written (those whose every target gave finite numbers).
    """
    n_targets = len(backend.targets)
    written = 0
    for j in range(take):
        i = pos + j
        started_s = time.time()  # live: when the request ran (wall clock is provenance here)
        outcomes = [backend.execute(block, i, a) for a in range(n_targets)]
        values = np.array([[o.latency_ms, o.energy_mj, o.accuracy] for o in outcomes], dtype=float)
        if not np.isfinite(values).all():
            bad = next(o for o in outcomes
                       if not np.isfinite([o.latency_ms, o.energy_mj, o.accuracy]).all())
            log.warning("request %d skipped: a target gave no finite outcome (%s)", first + j,
                        bad.error or "no error message")
            continue
        writer.write_requests(
            request=[first + j], timestamp_s=[started_s], network=block.network[i:i + 1],
            co_cpu_pct=block.co_cpu_pct[i:i + 1], co_mem_pct=block.co_mem_pct[i:i + 1],
            rssi_wifi_dbm=block.rssi_wifi_dbm[i:i + 1], rssi_p2p_dbm=block.rssi_p2p_dbm[i:i + 1],
            latency_ms=values[None, :, 0], energy_mj=values[None, :, 1],
            accuracy=values[None, :, 2],
            energy_source=np.array([[o.energy_source for o in outcomes]], dtype=object))
        written += 1
    return written


def describe(backend: Backend, *, seed: int, episode_requests: int | None, n_requests: int,
             provenance: dict[str, Any] | None = None) -> traces.TraceHeader:
    """The header of a recording of ``backend``: device, scenario, setting, provenance.

    A backend may add its own provenance (host, tools, meters, model files) through a
    ``provenance`` attribute or method returning a dict.
    """
    phone = getattr(backend, "phone", None)
    device = getattr(backend, "device_name", None) or getattr(backend, "device", None)
    if phone is not None:
        bundled = config.DEVICES_DIR / f"{phone.name}.toml"
        same = bundled.exists() and Path(phone.path).resolve() == bundled.resolve()
        device = phone.name if same else phone.path
    if not isinstance(device, str):
        device = getattr(device, "name", None) or str(device)
    scenario = getattr(backend, "scenario", None)
    scenario = getattr(scenario, "name", scenario)
    setting = getattr(backend, "setting", None)
    name = type(backend).__name__
    info: dict[str, Any] = {
        "kind": "simulated" if backend.deterministic else "measured",
        "backend": name,
        "recorded_with": f"autoscale_env {version.__version__} (autoscale_env.traces.recorder)",
        "seed": seed,
        "requests_planned": n_requests,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if hasattr(backend, "block_size"):
        info["block_size"] = int(backend.block_size)
    if phone is not None and backend.deterministic:  # which model produced the numbers
        info["profile"] = Path(phone.path).name
        info["profile_sha256"] = _sha256([Path(phone.path)])
        info["data_sha256"] = data_fingerprint()
        info["code_sha256"] = _sha256(_model_sources(type(backend).__module__))
    if not backend.deterministic:  # which machine produced the numbers
        info.update(host=platform.node(), platform=platform.platform(),
                    python=platform.python_version())
    extra = getattr(backend, "provenance", None)
    if callable(extra):
        extra = extra()
    if isinstance(extra, dict):
        info.update(extra)
    info.update(provenance or {})
    return traces.TraceHeader(device=str(device), scenario=str(scenario), setting=str(setting),
                              provenance=info, targets=tuple(str(t) for t in backend.targets),
                              coverage="full", episode_requests=episode_requests)


def data_fingerprint() -> str:
    """SHA-256 over the package's data files (profiles, catalog, links, settings, bins).

    Together with ``code_sha256`` (the backend package's modules) it says which version of the
    model a simulated trace comes from.
    """
    # Alternative state definitions (features_<name>.toml) only bin observations; the default
    # features.toml has always been part of the fingerprint, so it stays in.
    return _sha256(sorted(p for p in config.DATA_DIR.rglob("*.toml")
                          if not p.name.startswith("features_")))


#: Modules holding the world's rules, part of every simulated trace's ``code_sha256``.
_RULES_MODULES = ("autoscale_env.world.rules", "autoscale_env.world.reward", "autoscale_env.world.observation")


def _model_sources(module_name: str) -> list[Path]:
    """The backend's module file, the package modules it imports (sim: power, radio) and the
    rules modules (outcome model, reward, observation bins)."""
    module = sys.modules.get(module_name)
    files = {Path(module.__file__)} if getattr(module, "__file__", None) else set()
    for value in vars(module).values() if module else ():
        if (getattr(value, "__name__", "").startswith("autoscale_env.backends.")
                and getattr(value, "__file__", None)):
            files.add(Path(value.__file__))
    for name in _RULES_MODULES:
        rules = sys.modules.get(name)
        if getattr(rules, "__file__", None):
            files.add(Path(rules.__file__))
    return sorted(files)


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(p.parent.parent).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def _progress(total: int, enabled: bool, out: Path):
    from tqdm import tqdm  # a dependency

    return tqdm(total=total, unit="req", desc=out.name, file=sys.stderr, dynamic_ncols=True,
                disable=not enabled)
