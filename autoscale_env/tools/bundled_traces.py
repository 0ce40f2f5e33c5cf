"""The bundled sim traces: regenerate them with one command, and notice when they drift.

Every bundled ``sim-<device>-<scenario>-<setting>`` trace is a recording of the ``sim`` backend
(seed 0, 2020 requests, episodes of 101 requests). When the world's rules, the data files or the
seed contract change, the traces no longer show what the sim shows;
``tests/test_bundled_traces.py`` then fails with :data:`REGENERATE_COMMAND` in its message::

    python scripts/regenerate_traces.py            # rewrite every bundled sim trace
    python scripts/regenerate_traces.py --check    # exit 1 naming the stale ones
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from autoscale_env.world import config

from autoscale_env.traces import format as traces
from autoscale_env.backends.sim import SimBackend
from autoscale_env.traces.recorder import DEFAULT_EPISODE_REQUESTS, record

#: How to bring the bundled sim traces in line with the current sim (run from the repo root).
REGENERATE_COMMAND = "python scripts/regenerate_traces.py"

#: The recording every bundled sim trace is (unless its header says otherwise).
SEED = 0
REQUESTS = 2020
PREFIX = "sim-"

#: Trace arrays that must be bit-identical to a fresh recording.
COMPARED = ("network", "co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm",
            "latency_ms", "energy_mj", "accuracy")


#: Phones with bundled sim traces: the paper's three. ``host`` is fitted to live traces of this
#: machine, which are bundled instead (``live-host-*``).
PHONES = ("mi8pro", "galaxy_s10e", "moto_x_force")


def cells() -> list[tuple[str, str, str]]:
    """(device, scenario, setting) of every bundled sim trace that should exist."""
    return [(d, sc, st) for d in PHONES
            for sc in config.load_scenarios() for st in ("static", "dynamic")]


def trace_name(device: str, scenario: str, setting: str) -> str:
    return f"{PREFIX}{device}-{scenario}-{setting}"


def regenerate(directory: str | Path | None = None, *, progress: bool = True) -> list[Path]:
    """Record every bundled sim trace afresh into ``directory`` (default: the bundled folder)."""
    root = Path(directory) if directory is not None else Path(str(traces.bundled_root()))
    out = []
    for device, scenario, setting in cells():
        path = root / f"{trace_name(device, scenario, setting)}.csv.gz"
        backend = SimBackend(device, scenario, setting)
        record(backend, REQUESTS, path, seed=SEED, force=True,
               episode_requests=DEFAULT_EPISODE_REQUESTS, progress=progress)
        out.append(path)
    return out


def stale(names: list[str] | None = None) -> list[str]:
    """Bundled sim traces (all, or ``names``) that differ from what the current sim records with
    the seed, request count and episode length in their headers, each as ``"name: why"``."""
    bundled = [n for n in traces.bundled_traces() if n.startswith(PREFIX)]
    expected = {trace_name(*c) for c in cells()}
    problems = [f"{n}: missing" for n in sorted(expected - set(bundled)) if names is None]
    with tempfile.TemporaryDirectory(prefix="autoscale-traces-") as tmp:
        for name in names if names is not None else sorted(bundled):
            t = traces.load_trace(name)
            h = t.header
            fresh_path = Path(tmp) / f"{name}.csv.gz"
            record(SimBackend(h.device, h.scenario, h.setting), t.n_requests, fresh_path,
                   seed=int(h.provenance.get("seed", SEED)), progress=False,
                   episode_requests=h.episode_requests)
            fresh = traces.load_trace(fresh_path)
            for field in COMPARED:
                a, b = np.asarray(getattr(t, field)), np.asarray(getattr(fresh, field))
                if a.shape != b.shape or a.tobytes() != b.tobytes():
                    problems.append(f"{name}: {field} differs from the current sim")
                    break
    return problems


def stale_message(problems: list[str]) -> str:
    """The failure message naming the stale traces and the regeneration command."""
    return (f"{len(problems)} bundled sim trace(s) no longer match the sim "
            f"({'; '.join(problems[:3])}{'; ...' if len(problems) > 3 else ''}). "
            f"Regenerate them from the repository root with: {REGENERATE_COMMAND}")


def table(directory: str | Path | None = None) -> str:
    """The markdown rows of traces/README.md's table of bundled sim traces."""
    root = Path(directory) if directory is not None else Path(str(traces.bundled_root()))
    rows = []
    for device, scenario, setting in cells():
        name = trace_name(device, scenario, setting)
        path = root / f"{name}.csv.gz"
        t = traces.load_trace(path)
        rows.append(f"| `{name}` | {device} | {scenario} | {setting} | {t.n_requests} | "
                    f"{len(t.targets)} | {path.stat().st_size / 1024:.0f} KiB |")
    return "\n".join(rows)
