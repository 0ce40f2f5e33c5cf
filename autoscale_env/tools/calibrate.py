"""Fit a device profile from a measured (or simulated) full trace: ``autoscale calibrate``.

    autoscale calibrate --trace T [--trace T2 ...] --out profile.toml [--base mi8pro]

The fitted profile has the simulator's own functional form (:mod:`autoscale_env.world.power`,
:mod:`autoscale_env.world.radio`), so ``SimBackend(device="profile.toml")`` is a world fitted to
the measurements:

* **Local targets** (``local/<processor>/<precision>``): latency ``= base_ms[network, unit] x
  (1 + mem_interference x co_mem) x (1 + cpu_interference x co_cpu) x noise`` with a lognormal
  noise of median 1. In log space this is additive, and the fit minimises the sum of absolute
  log residuals (least absolute deviations): ``base_ms`` is then each (network, unit)'s median
  latency after removing interference, which is what the simulator's median-1 noise makes it.
  The interference factors are shared by every unit of a processor (the profile schema has them
  per processor), searched on a grid refined around the best point, constrained to [0, 10]
  (co-running load cannot speed inference up). Per (network, unit) interference and the noise
  (``1.4826 x MAD`` of the log residuals, a robust sigma) are reported, not written: the profile
  has no per-network interference, and the noise sigma lives in ``settings.toml`` per setting.
* **Remote targets** (``edge/...``, ``cloud/...``): the link model at the request's RSSI (RTT and
  the catalog's bytes at the MCS goodput, by :func:`radio.offload` itself, as the simulator and
  the live backend's link shaping compute it) is subtracted from the measured latency; the median of
  the rest per network is the server's latency, written to an edge/cloud profile beside the phone
  profile (``<stem>_edge.toml``, ``<stem>_cloud.toml``). The link's goodput scale (measured over
  modelled transfer time) is fitted as a check of the link model and reported; links are global
  (``links.toml``), not part of a device profile, so it is not written.
* **Power**: busy and idle power of a processor are fitted (least squares of ``energy = busy_ms x
  (busy_w + base_w) + wait_ms x (idle_w + base_w)``) only where the trace's local energy is
  measured (``rapl``, ``nvml``, ``measured``). Energy that is ``model`` (computed from a phone's
  power model) identifies nothing, and the base profile's power is kept.

Every fitted number carries a 95 % confidence interval from a moving-block bootstrap over
requests (blocks of consecutive requests keep the dynamic setting's correlated load segments
together), and every table a ``source = "fitted from <trace> (<n> requests): ..."``. A parameter
the trace cannot identify (a unit no target ran, a network no request named, co-running memory or
CPU that hardly varied) keeps the base profile's value, and its source says so.

A trace that cannot support the fit is refused with a message naming what is missing: partial
coverage, too few requests overall or for a network of the scenario's mix, no ``local/cpu/fp32``
target (the reward's reference), traces of different devices or targets.

**Recording conditions.** A measured trace whose header says that processes outside the recording
used more than :data:`MAX_FOREIGN_CPU` of the machine's CPU time while it ran (``conditions.
foreign_cpu.mean``, written by :mod:`autoscale_env.traces.recorder`) is refused, naming the
figure; ``force=True`` (``--force``) fits it anyway and the report carries a warning. Why 10 %:
unmeasured contention stretches the recorded latency by up to ``1 / (1 - f)`` when a foreign
share ``f`` competes for the cores the inference runs on (processor sharing), an error the fit
cannot attribute to any context column. At ``f = 0.10`` that is ``log(1/0.9) = 0.105``, which
leaves room under the sim-to-real bar (median ``|log(sim/measured)|`` <= 0.15) for the sim's own
noise (sigma 0.05); at ``f = 0.14`` the contention alone reaches the bar. The host's bundled
traces were recorded at 90-99 % co-running load from other users, far beyond it. Simulated traces
are never refused (host load does not change a simulated outcome); a trace without
``conditions`` (recorded before the recorder wrote them) is fitted with a note that its
conditions are unknown.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit
from tqdm import tqdm

from autoscale_env.world import config
from autoscale_env.world import radio
from autoscale_env.tools import interference
from autoscale_env.world.types import Target
from autoscale_env.world.errors import AutoScaleError
from autoscale_env.world.files import atomic_write
from autoscale_env.traces.format import Trace, load_trace

__all__ = [
    "CalibrationError",
    "Calibration",
    "Estimate",
    "calibrate",
    "summary",
    "write_profile",
]

#: Requests one bootstrap replicate resamples, at most. A longer trace is bootstrapped m out of
#: n (m = this): each replicate resamples m requests in blocks, and the intervals' distances
#: from the point estimate are scaled by sqrt(m / n), the rate at which these estimators (medians,
#: least absolute deviations) tighten. The point estimates always use every request; the
#: bootstrap's time and memory stop growing with the trace (an 80,000-request trace costs what a
#: 10,000-request one does, plus its point fits).
MAX_BOOTSTRAP_REQUESTS = 10_000
#: Rows the coarse interference grid is searched on, at most (every k-th row beyond it); the
#: refinement around its best point always uses every row.
MAX_COARSE_ROWS = 20_000
#: A bootstrap replicate searches the coarse interference grid within this many cells of the
#: point fit's optimum (the whole grid if its best cell is on the window's edge).
REPLICATE_WINDOW = 3
#: Sources of energy that are a meter's reading, not a model's output.
MEASURED_ENERGY = frozenset({"rapl", "nvml", "measured"})
#: Interference factors are searched in [0, MAX_INTERFERENCE].
MAX_INTERFERENCE = 10.0
#: A co-running load whose 10th-90th percentile spread is below this fraction cannot identify
#: its interference factor (the fit would extrapolate from noise).
MIN_CONTEXT_SPREAD = 0.05
#: Robust sigma of a normal from its median absolute deviation.
MAD_TO_SIGMA = 1.4826
#: Largest mean share of the machine's CPU time that processes outside a measured recording may
#: have used (``conditions.foreign_cpu.mean``) for calibrate to fit it (module docstring: why).
MAX_FOREIGN_CPU = 0.10


class CalibrationError(AutoScaleError, ValueError):
    """The trace cannot support a fit; the message names what is missing."""


@dataclass
class Estimate:
    """One fitted (or kept) number with its 95 % confidence interval."""

    value: float
    low: float = math.nan
    high: float = math.nan
    fitted: bool = True
    note: str = ""

    def text(self, unit: str = "", digits: int = 3) -> str:
        """``0.83 [0.71, 0.95]`` or ``0.3 (kept: <why>)``."""
        u = f" {unit}" if unit else ""
        if not self.fitted:
            return f"{_g(self.value, digits)}{u} (kept: {self.note})"
        note = f" ({self.note})" if self.note else ""
        return (f"{_g(self.value, digits)}{u} [{_g(self.low, digits)}, {_g(self.high, digits)}]"
                f"{note}")


def _g(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if math.isfinite(x) else "nan"


@dataclass
class Calibration:
    """Everything :func:`calibrate` found, ready for :func:`write_profile` and the report."""

    name: str
    base: str
    traces: list[str]
    n_requests: int
    source: str
    targets: list[str]
    scenario: str
    settings: list[str]
    bootstrap: int
    block_requests: int
    base_latency_ms: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    """network -> unit -> base latency (local units of the phone)."""
    interference: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    """processor -> {cpu_interference, mem_interference} (written to the profile)."""
    interference_per_unit: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """network -> unit -> {cpu_interference, mem_interference} point fits (report only)."""
    noise_sigma: dict[str, Estimate] = field(default_factory=dict)
    """target -> robust sigma of log latency around the fit (report only)."""
    power: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    """processor -> {busy_power_w, idle_power_w}."""
    server_latency_ms: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    """remote target -> network -> server latency."""
    link_goodput_scale: dict[str, Estimate] = field(default_factory=dict)
    """link -> measured/modelled goodput (report only)."""
    requests_per_network: dict[str, int] = field(default_factory=dict)
    bootstrap_requests: int = 0
    """Requests per bootstrap replicate when fewer than all (m out of n); 0: all of them."""
    context: dict[str, dict[str, float]] = field(default_factory=dict)
    """co_cpu_pct / co_mem_pct: p10, median, p90 over the trace's requests."""
    kept: list[str] = field(default_factory=list)
    """Human-readable list of what was not identifiable and kept from the base profile."""
    conditions: dict[str, Any] = field(default_factory=dict)
    """trace (as given, like :attr:`traces`) -> its header's recording conditions (None: not
    recorded)."""
    interference_ps: dict[str, dict[str, Any]] = field(default_factory=dict)
    """processor -> the processor-sharing fit of its CPU interference beside the linear one
    (report only; :mod:`autoscale_env.tools.interference`): form, params, 95 % intervals and
    each model's median ``|log(fit / measured)|``."""
    warnings: list[str] = field(default_factory=list)
    """What the fit had to accept (a trace recorded under foreign load, with ``force``)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every estimate."""
        return json.loads(json.dumps(asdict(self), default=float, allow_nan=True))


# --------------------------------------------------------------------------------------------
# Checks


def check_traces(traces: Sequence[Trace], *, min_requests: int, min_per_network: int) -> None:
    """Refuse traces that cannot support a fit, naming what is missing (see module docstring)."""
    if not traces:
        raise CalibrationError("calibrate needs at least one trace (--trace)")
    first = traces[0]
    for t in traces:
        h = t.header
        if h.coverage != "full" or not t.complete:
            missing = {}
            for j, name in enumerate(t.target_names):
                k = int((~np.isfinite(t.latency_ms[:, j])).sum())
                if k:
                    missing[name] = k
            detail = ", ".join(f"{name} in {k} of {t.n_requests} requests"
                               for name, k in missing.items()) or "none recorded as missing"
            raise CalibrationError(
                f"{t.path}: a partial trace (coverage: {h.coverage!r}); calibrate needs every "
                f"target's outcome of every request (a full recording: autoscale record). "
                f"Missing outcomes: {detail}")
        if (h.device, h.scenario, tuple(t.target_names)) != (
                first.header.device, first.header.scenario, tuple(first.target_names)):
            raise CalibrationError(
                f"{t.path}: device {h.device!r}, scenario {h.scenario!r}, targets "
                f"{t.target_names} differ from {first.path}'s ({first.header.device!r}, "
                f"{first.header.scenario!r}, {first.target_names}); calibrate one device, "
                f"scenario and target set at a time")
    if "local/cpu/fp32" not in first.target_names:
        raise CalibrationError(
            f"{first.path}: no local/cpu/fp32 target (targets: {first.target_names}); a profile "
            f"needs it (the reward's reference energy)")
    n = sum(t.n_requests for t in traces)
    if n < min_requests:
        raise CalibrationError(
            f"{', '.join(t.path for t in traces)}: {n} requests; calibrate needs at least "
            f"{min_requests} (--min-requests), {min_requests - n} more")
    counts = _requests_per_network(traces)
    mix = config.get_scenario(first.header.scenario).networks
    short = {net: counts.get(net, 0) for net in mix if counts.get(net, 0) < min_per_network}
    if short:
        raise CalibrationError(
            f"{', '.join(t.path for t in traces)}: too few requests of "
            + ", ".join(f"{net} ({k})" for net, k in short.items())
            + f" in scenario {first.header.scenario!r}'s mix; calibrate needs at least "
            f"{min_per_network} per network (--min-per-network)")


def check_conditions(traces: Sequence[Trace], *, max_foreign_cpu: float = MAX_FOREIGN_CPU,
                     force: bool = False) -> list[str]:
    """Refuse measured traces recorded under foreign load (module docstring, "Recording
    conditions"); with ``force``, return the refusals as warnings instead.

    Returns:
        Warnings and notes for the report (forced refusals, unknown conditions).

    Raises:
        CalibrationError: a measured trace's foreign CPU share exceeds ``max_foreign_cpu``; the
            message names the trace, the share, the load average and the threshold.
    """
    notes: list[str] = []
    for t in traces:
        if t.header.provenance.get("kind") != "measured":
            continue
        c = t.header.conditions
        foreign = (c or {}).get("foreign_cpu") or {}
        share = foreign.get("mean")
        if share is None:
            why = ("its header has no recording conditions (recorded before the recorder wrote "
                   "them)" if c is None else "its header's conditions have no foreign CPU share "
                                             "(not readable on the recording machine)")
            notes.append(f"{t.path}: foreign load unknown: {why}; the fit assumes the machine "
                         f"ran nothing else")
            continue
        if share <= max_foreign_cpu:
            continue
        cpus = c.get("cpus_used") or c.get("cpu_count")
        load = (f"; load average {_loads(c.get('load_average_before'))} before, "
                f"{_loads(c.get('load_average_after'))} after")
        peak = foreign.get("max_interval")
        peak = f"{peak * 100:.1f} %" if isinstance(peak, (int, float)) else "unknown"
        text = (f"{t.path}: foreign CPU load {share * 100:.1f} % of {cpus} CPU(s) during the "
                f"recording (mean; busiest interval {peak}{load}) exceeds "
                f"{max_foreign_cpu * 100:.0f} % (--max-foreign-cpu): other processes competed "
                f"with the recording, so its latencies mix the co-running load the model fits "
                f"with contention no context column records. Re-record on a quiet machine")
        if not force:
            raise CalibrationError(text + ", or pass --force to fit it anyway")
        notes.append("FORCED: " + text + "; fitted anyway (--force), treat the fit as confounded")
    return notes


def _loads(v: Any) -> str:
    return "/".join(f"{x:g}" for x in v) if isinstance(v, list) else "unknown"


def _requests_per_network(traces: Sequence[Trace]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in traces:
        names = [w.name for w in t.workloads]
        for k in t.network.tolist():
            out[names[k]] = out.get(names[k], 0) + 1
    return out


# --------------------------------------------------------------------------------------------
# Fitting


@dataclass
class _Data:
    """The traces' requests concatenated (one row per request)."""

    network: np.ndarray  # network names, object
    cpu: np.ndarray  # co-running CPU fraction
    mem: np.ndarray
    wifi: np.ndarray
    p2p: np.ndarray
    latency: np.ndarray  # (n, T) ms
    energy: np.ndarray  # (n, T) mJ
    source: np.ndarray  # (n, T) energy source
    segment: np.ndarray  # which trace each request came from (blocks never span two)


def _concat(traces: Sequence[Trace]) -> _Data:
    parts = []
    for k, t in enumerate(traces):
        names = np.array([w.name for w in t.workloads], dtype=object)
        parts.append((names[t.network], t.co_cpu_pct / 100.0, t.co_mem_pct / 100.0,
                      t.rssi_wifi_dbm, t.rssi_p2p_dbm, t.latency_ms, t.energy_mj,
                      t.energy_source, np.full(t.n_requests, k)))
    cols = [np.concatenate([p[i] for p in parts]) for i in range(9)]
    return _Data(*cols)


def _block_bootstrap(data: _Data, rng: np.random.Generator, block: int,
                     size: int | None = None) -> np.ndarray:
    """Row indices of one moving-block bootstrap sample, blocks within each trace.

    ``size`` (None: every request) is the replicate's length, shared among the traces in
    proportion to their lengths (an m-out-of-n bootstrap when below the number of requests).
    """
    out = []
    total = len(data.segment)
    for seg in np.unique(data.segment):
        rows = np.flatnonzero(data.segment == seg)
        n = len(rows)
        take = n if size is None or size >= total else max(1, round(n * size / total))
        b = max(1, min(block, n))
        starts = rng.integers(0, n - b + 1, size=math.ceil(take / b))
        idx = (starts[:, None] + np.arange(b)).reshape(-1)[:take]
        out.append(rows[idx])
    return np.concatenate(out)


class _Resamples(list):
    """The bootstrap replicates' row indices, and how far to scale their spread
    (``shrink = sqrt(m / n)``; 1 when each replicate has every request)."""

    shrink: float = 1.0


def _spread(x: np.ndarray) -> float:
    lo, hi = np.percentile(x, [10, 90])
    return float(hi - lo)


@njit(cache=True)
def _segment_lad(y: np.ndarray, cpu: np.ndarray, mem: np.ndarray, starts: np.ndarray,
                 kc: float, km: float) -> tuple[np.ndarray, float]:
    """Per-group medians of the log residuals ``y - log1p(kc cpu) - log1p(km mem)`` and the sum
    of absolute deviations from them; rows are sorted by group, group ``g`` is
    ``starts[g]:starts[g + 1]``. Compiled: the grid search calls it thousands of times."""
    med = np.empty(len(starts) - 1)
    loss = 0.0
    for g in range(len(starts) - 1):
        a, b = starts[g], starts[g + 1]
        r = np.empty(b - a)
        for i in range(a, b):
            r[i - a] = y[i] - math.log1p(kc * cpu[i]) - math.log1p(km * mem[i])
        m = np.median(r)
        med[g] = m
        for v in r:
            loss += abs(v - m)
    return med, loss


class _LocalFit:
    """Least-absolute-deviation fit of one processor's units (module docstring)."""

    def __init__(self, y: np.ndarray, cpu: np.ndarray, mem: np.ndarray, group: np.ndarray,
                 fit_cpu: bool, fit_mem: bool, kc0: float, km0: float):
        self.fit_cpu, self.fit_mem, self.kc0, self.km0 = fit_cpu, fit_mem, kc0, km0
        order = np.argsort(group, kind="stable")
        self.y, self.cpu, self.mem = (np.ascontiguousarray(a[order], dtype=np.float64)
                                      for a in (y, cpu, mem))
        self.group = group[order]
        bounds = np.flatnonzero(np.diff(self.group)) + 1
        self.starts = np.concatenate(([0], bounds, [len(self.group)])).astype(np.int64)
        self.groups = np.unique(group)

    def residual_medians(self, kc: float, km: float) -> tuple[np.ndarray, float]:
        return _segment_lad(self.y, self.cpu, self.mem, self.starts, float(kc), float(km))

    def fit(self, start: tuple[float, float] | None = None) -> tuple[float, float, np.ndarray]:
        """(kc, km, per-group log base latency): a coarse grid over [0, 10] finds the basin,
        then the step is halved six times on a 5x5 grid around the best point.

        With ``start`` (a bootstrap replicate, whose optimum lies near the point fit's), the
        coarse grid is searched only within :data:`REPLICATE_WINDOW` cells of ``start``,
        widened to the whole grid when the best cell is on the window's edge: the same search
        as the point fit's wherever the replicate's basin is near, at a tenth of the cost."""
        kcs = np.linspace(0.0, MAX_INTERFERENCE, 41) if self.fit_cpu else np.array([self.kc0])
        kms = np.linspace(0.0, MAX_INTERFERENCE, 21) if self.fit_mem else np.array([self.km0])
        step_c = (kcs[1] - kcs[0]) if len(kcs) > 1 else 0.0
        step_m = (kms[1] - kms[0]) if len(kms) > 1 else 0.0
        coarse = self
        if len(self.y) > MAX_COARSE_ROWS:  # the grid only finds the basin: every k-th row will do
            k = math.ceil(len(self.y) / MAX_COARSE_ROWS)
            coarse = _LocalFit(self.y[::k], self.cpu[::k], self.mem[::k], self.group[::k],
                               self.fit_cpu, self.fit_mem, self.kc0, self.km0)
        window_c, window_m = kcs, kms
        if start is not None:
            window_c, window_m = _window(kcs, start[0]), _window(kms, start[1])
        _, kc, km = min((coarse.residual_medians(a, b)[1], a, b)
                        for a in window_c for b in window_m)
        if _on_edge(window_c, kcs, kc) or _on_edge(window_m, kms, km):
            _, kc, km = min((coarse.residual_medians(a, b)[1], a, b) for a in kcs for b in kms)
        best = (self.residual_medians(kc, km)[1], kc, km)
        for _ in range(6):  # refine on a 5x5 grid around the best point, halving the step
            cands = [(self.residual_medians(a, b)[1], a, b)
                     for a in _around(kc, step_c) for b in _around(km, step_m)]
            _, kc, km = min(cands + [best])
            best = (self.residual_medians(kc, km)[1], kc, km)
            step_c, step_m = step_c / 2, step_m / 2
        med, _ = self.residual_medians(kc, km)
        return float(kc), float(km), med


def _window(grid: np.ndarray, x: float) -> np.ndarray:
    """The grid's points within :data:`REPLICATE_WINDOW` cells of the one nearest ``x``."""
    i = int(np.argmin(np.abs(grid - x)))
    return grid[max(0, i - REPLICATE_WINDOW): i + REPLICATE_WINDOW + 1]


def _on_edge(window: np.ndarray, grid: np.ndarray, x: float) -> bool:
    """Whether ``x`` is on an edge of ``window`` that is not also an edge of the whole grid."""
    return ((x == window[0] and window[0] != grid[0])
            or (x == window[-1] and window[-1] != grid[-1]))


def _around(x: float, step: float) -> np.ndarray:
    if step == 0.0:
        return np.array([x])
    return np.clip(x + step * np.array([-1.0, -0.5, 0.0, 0.5, 1.0]), 0.0, MAX_INTERFERENCE)


def _ci(samples: Sequence[float], point: float = math.nan,
        shrink: float = 1.0) -> tuple[float, float]:
    """The 95 % percentile interval of bootstrap values; with ``shrink`` < 1 (an m-out-of-n
    bootstrap) their distances from ``point`` are scaled by it."""
    a = np.asarray(samples, dtype=float)
    a = a[np.isfinite(a)]
    if not len(a):
        return math.nan, math.nan
    lo, hi = np.percentile(a, [2.5, 97.5])
    if shrink != 1.0 and math.isfinite(point):
        lo, hi = point + shrink * (lo - point), point + shrink * (hi - point)
    return float(lo), float(hi)


def _link_ms(link: config.LinkModel, rssi: np.ndarray, up_kbit: np.ndarray,
             down_kbit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(transfer ms of ``up_kbit`` and ``down_kbit`` at the model's goodput, RTT ms) per request,
    NaN where the link is disconnected; at ``s`` x the goodput the transfer takes
    ``transfer / s``. The link model's own functions (:func:`radio.link_state`,
    :func:`radio.offload` with no server time), which the simulator and the live backend's
    shaping call too: the server time is ``latency - transfer - RTT`` by the same formula."""
    params = radio.link_params(link)
    rssi = np.asarray(rssi, dtype=np.float64)
    transfer, rtt = np.empty(rssi.shape), np.empty(rssi.shape)
    states = {}  # a trace's RSSI readings take few distinct values: one link state per value
    for i, (x, up, down) in enumerate(zip(rssi.tolist(), np.broadcast_to(up_kbit, rssi.shape)
                                          .tolist(), np.broadcast_to(down_kbit, rssi.shape)
                                          .tolist())):
        if x not in states:
            states[x] = radio.link_state(params, 0.0, x, 1.0)
        goodput, rtt_i, tx_w, rx_w = states[x]
        if goodput > 0.0:
            total = radio.offload(goodput, rtt_i, tx_w, rx_w, link.timeout_ms, up, down, 0.0,
                                  0.0, 0.0)[0]
            transfer[i], rtt[i] = total - rtt_i, rtt_i
        else:
            transfer[i], rtt[i] = math.nan, rtt_i
    return transfer, rtt


def calibrate(traces: Sequence[str | os.PathLike], *, base: str = "mi8pro", name: str = "fitted",
              bootstrap: int = 200, block_requests: int = 10, seed: int = 0,
              min_requests: int = 100, min_per_network: int = 10,
              progress: bool = False, max_foreign_cpu: float = MAX_FOREIGN_CPU,
              force: bool = False) -> Calibration:
    """Fit a profile's parameters from full traces of one device (module docstring).

    Args:
        traces: trace paths or bundled names (e.g. a static and a dynamic recording).
        base: phone profile whose values are kept where the traces identify nothing.
        name: the fitted profile's name.
        bootstrap: bootstrap replicates for the confidence intervals (0: none).
        block_requests: consecutive requests per bootstrap block.
        seed: seeds the bootstrap.
        min_requests: refuse fewer requests than this in all traces together.
        min_per_network: refuse fewer requests than this of any network of the scenario's mix.
        progress: show a progress bar over bootstrap replicates.
        max_foreign_cpu: refuse a measured trace whose recording conditions say other processes
            used more than this share of the machine's CPU time (:data:`MAX_FOREIGN_CPU`).
        force: fit such a trace anyway; the refusal becomes a warning in the report.

    Raises:
        CalibrationError: the traces cannot support a fit (the message names what is missing).
    """
    loaded = [load_trace(t) for t in traces]
    check_traces(loaded, min_requests=min_requests, min_per_network=min_per_network)
    notes = check_conditions(loaded, max_foreign_cpu=max_foreign_cpu, force=force)
    base_profile = config.load_device(base)
    if base_profile.kind != "phone":
        raise CalibrationError(f"--base {base!r} is a {base_profile.kind} profile; it must be a "
                               f"phone profile ({', '.join(config.device_names())})")
    data = _concat(loaded)
    first = loaded[0]
    targets = [Target.parse(t) for t in first.target_names]
    n = len(data.network)
    label = " + ".join(Path(t.path).name.split(".")[0] for t in loaded)
    source = f"fitted from {label} ({n} requests)"
    cal = Calibration(
        name=name, base=base_profile.name, traces=[str(t) for t in traces], n_requests=n,
        source=source, targets=[str(t) for t in targets], scenario=first.header.scenario,
        settings=sorted({t.header.setting for t in loaded}), bootstrap=int(bootstrap),
        block_requests=int(block_requests),
        requests_per_network=_requests_per_network(loaded),
        conditions={str(given): t.header.conditions for given, t in zip(traces, loaded)},
        warnings=notes,
        context={k: dict(zip(("p10", "median", "p90"),
                             (float(v) for v in np.percentile(x * 100, [10, 50, 90]))))
                 for k, x in (("co_cpu_pct", data.cpu), ("co_mem_pct", data.mem))},
    )
    rng = np.random.default_rng(seed)
    size = None if n <= MAX_BOOTSTRAP_REQUESTS else MAX_BOOTSTRAP_REQUESTS
    samples = _Resamples(_block_bootstrap(data, rng, block_requests, size)
                         for _ in range(int(bootstrap)))
    if samples and size is not None:
        samples.shrink = math.sqrt(len(samples[0]) / n)
        cal.bootstrap_requests = len(samples[0])

    power = _model_power_profile(loaded)
    _fit_local(cal, data, targets, base_profile, samples, progress, power)
    _fit_sharing(cal, data, targets, loaded, bootstrap=min(int(bootstrap), 20), seed=seed,
                 block=block_requests)
    _fit_remote(cal, data, targets, base_profile, samples)
    return cal


def _fit_sharing(cal: Calibration, data: _Data, targets: list[Target], traces: Sequence[Trace],
                 *, bootstrap: int, seed: int, block: int) -> None:
    """Fit processor sharing beside the linear factor, per local processor (report only).

    A measured trace's co-running CPU is the co-runners' share over the request (the live
    monitor), so the ``share`` form; a simulated one's is exogenous demand, the ``demand`` form.
    """
    form = "share" if all(t.header.provenance.get("kind") == "measured" for t in traces) \
        else "demand"
    local = [(j, t) for j, t in enumerate(targets) if t.is_local]
    for proc in sorted({t.processor for _, t in local}):
        cols = [(j, t) for j, t in local if t.processor == proc]
        keys = sorted({(n, t.unit) for n in data.network.tolist() for _, t in cols})
        index = {k: g for g, k in enumerate(keys)}
        lat = np.concatenate([data.latency[:, j] for j, _ in cols])
        u = np.tile(data.cpu, len(cols))
        group = np.array([index[(n, t.unit)] for _, t in cols for n in data.network.tolist()])
        ok = np.isfinite(lat) & (lat > 0)
        if ok.sum() < 10:
            continue
        lat, u, group = lat[ok], u[ok], group[ok]
        linear = interference.fit(lat, u, group, "linear")
        sharing = interference.fit(lat, u, group, form)
        # The share form is a 1-D fit, cheap to bootstrap; the demand form's 2-D grid is not
        # (seconds per fit): its interval is left to interference.bootstrap, and said so.
        ci = interference.bootstrap(lat, u, group, form, replicates=bootstrap, block=block,
                                    seed=seed) if bootstrap and form == "share" else {}
        cal.interference_ps[proc] = {
            "form": form, "params": sharing.params, "ci95": ci,
            "median_abs_log_error": sharing.median_abs_log_error,
            "linear_cpu_interference": linear.params["cpu_interference"],
            "linear_median_abs_log_error": linear.median_abs_log_error,
            "note": "" if ci else "95 % interval not computed (run "
                                  "autoscale_env.tools.interference.bootstrap)",
        }


def _model_power_profile(traces: Sequence[Trace]) -> config.DeviceProfile | None:
    """The phone profile whose power model computed the traces' ``model`` energy, if named.

    The live backend writes ``"energy": "model: <profile> power profile on measured times"``
    into the header's provenance; its energy is then that profile's
    :func:`~autoscale_env.world.power.local_run` of the measured busy (CPU) time and wall
    time, so the busy time can be read back exactly.
    """
    names = set()
    for t in traces:
        text = str(t.header.provenance.get("energy", ""))
        if not text.startswith("model: ") or " power profile" not in text:
            return None
        names.add(text[len("model: "):text.index(" power profile")])
    if len(names) != 1:
        return None
    try:
        return config.load_device(names.pop())
    except AutoScaleError:
        return None


def _busy_ms(data: _Data, j: int, proc: str, power: config.DeviceProfile | None) -> np.ndarray:
    """Busy time of local target column ``j`` recovered from model energy (NaN where unknown).

    ``energy = busy x P_busy + (latency - busy) x P_idle + latency x P_base`` (the live backend's
    model of the measured CPU time), solved for ``busy``.
    """
    lat, e = data.latency[:, j], data.energy[:, j]
    if power is None or proc not in power.processors:
        return np.full(len(lat), np.nan)
    p = power.processors[proc]
    busy = (e - lat * (p.idle_power_w + power.base_power_w)) / (p.busy_power_w - p.idle_power_w)
    ok = (data.source[:, j] == "model") & np.isfinite(busy) & (busy > 0)
    return np.where(ok, np.minimum(busy, lat), np.nan)


def _stretch_fit(log_stretch: np.ndarray, cpu: np.ndarray) -> float:
    """``kc`` minimising ``sum |log(latency / busy) - log(1 + kc x co_cpu)|`` (no intercept: the
    model has no stretch without co-running load)."""
    ok = np.isfinite(log_stretch) & (cpu > 0)
    x, c = log_stretch[ok], cpu[ok]
    if not len(x):
        return math.nan

    def loss(kc: float) -> float:
        return float(np.abs(x - np.log1p(kc * c)).sum())

    best = min(np.linspace(0.0, 4 * MAX_INTERFERENCE, 81), key=loss)
    step = 4 * MAX_INTERFERENCE / 80
    for _ in range(12):
        step /= 2
        best = min((max(0.0, best - step), best, best + step), key=loss)
    return float(best)


def _fit_local(cal: Calibration, data: _Data, targets: list[Target],
               base: config.DeviceProfile, samples: list[np.ndarray], progress: bool,
               power: config.DeviceProfile | None = None) -> None:
    local = [(j, t) for j, t in enumerate(targets) if t.is_local]
    shrink = getattr(samples, "shrink", 1.0)
    networks = sorted(set(data.network.tolist()))
    code = {net: i for i, net in enumerate(networks)}
    net_code = np.array([code[x] for x in data.network.tolist()], dtype=np.int64)
    cpu_ok = _spread(data.cpu) >= MIN_CONTEXT_SPREAD
    mem_ok = _spread(data.mem) >= MIN_CONTEXT_SPREAD
    for proc in sorted({t.processor for _, t in local}):
        cols = [(j, t) for j, t in local if t.processor == proc]
        base_proc = base.processors.get(proc) or base.processors[base.fallback_unit.split("/")[0]]
        # one row per (request, unit) of this processor; groups are (network, unit)
        keys = [(net, t.unit) for net in networks for _, t in cols]
        # group of (request, unit) = network index x units + unit position, as in ``keys``

        def stacked(rows: np.ndarray):
            y, c, m, g = [], [], [], []
            for u, (j, _) in enumerate(cols):
                lat = data.latency[rows, j]
                ok = np.isfinite(lat) & (lat > 0)
                y.append(np.log(lat[ok]))
                c.append(data.cpu[rows][ok])
                m.append(data.mem[rows][ok])
                g.append(net_code[rows][ok] * len(cols) + u)
            return (np.concatenate(y), np.concatenate(c), np.concatenate(m), np.concatenate(g))

        unit_of_group = np.array([[t.unit for _, t in cols].index(u) for _, u in keys])
        # Busy time read back from model energy identifies the CPU interference directly: the
        # model's latency is busy x (1 + kc x co_cpu), so latency / busy is the stretch.
        log_stretch = np.column_stack([np.log(data.latency[:, j] / _busy_ms(data, j, proc, power))
                                       for j, _ in cols])
        by_busy = bool(np.isfinite(log_stretch).mean() > 0.9 and (data.cpu > 0).mean() > 0.5)

        def fit(rows: np.ndarray, start: tuple[float, float] | None = None):
            y, c, m, g = stacked(rows)
            kc_fixed = base_proc.cpu_interference
            if by_busy:
                kc_fixed = _stretch_fit(log_stretch[rows].reshape(-1),
                                        np.repeat(data.cpu[rows], len(cols)))
            f = _LocalFit(y, c, m, g, free["cpu_interference"], free["mem_interference"],
                          kc_fixed, base_proc.mem_interference)
            kc, km, med = f.fit(start)
            base_ms = dict.fromkeys(range(len(keys)), math.nan)
            centre = np.full(len(keys), math.nan)
            centre[f.groups] = med
            for gi, v in zip(f.groups.tolist(), med.tolist()):
                base_ms[gi] = math.exp(v)
            r = y - np.log1p(kc * c) - np.log1p(km * m) - centre[g]
            unit = unit_of_group[g]
            sigma = [MAD_TO_SIGMA * float(np.median(np.abs(r[unit == u]))) if (unit == u).any()
                     else math.nan for u in range(len(cols))]
            return kc, km, base_ms, sigma, (y, c, m, g)

        free = {"cpu_interference": cpu_ok and not by_busy, "mem_interference": mem_ok}
        unstable: dict[str, str] = {}
        while True:
            kc, km, base_ms, sigma, (y, c, m, g) = fit(np.arange(len(data.network)))
            boot = []
            for rows in tqdm(samples, desc=f"bootstrap {proc}", disable=not progress,
                             unit="fit"):
                kc_b, km_b, base_b, sigma_b, _ = fit(rows, start=(kc, km))
                boot.append((kc_b, km_b, base_b, sigma_b))
            # A factor whose interval spans more than 1 or reaches the search bound is not an
            # estimate (other unmeasured load moves with it): keep the base value and refit.
            newly = []
            for k, key in enumerate(("cpu_interference", "mem_interference")):
                lo, hi = _ci([b[k] for b in boot], (kc, km)[k], shrink)
                if free[key] and boot and (hi - lo > 1.0 or hi >= 0.95 * MAX_INTERFERENCE):
                    free[key] = False
                    unstable[key] = f"its bootstrap 95 % CI [{lo:.3g}, {hi:.3g}] is too wide"
                    newly.append(key)
            if not newly:  # each pass frees fewer factors, so this ends within three passes
                break

        spread_note = {
            "cpu_interference": (cpu_ok, f"co-running CPU spans only {_spread(data.cpu) * 100:.1f} "
                                         f"points (p10-p90), below {MIN_CONTEXT_SPREAD * 100:.0f}"),
            "mem_interference": (mem_ok, f"co-running memory spans only "
                                         f"{_spread(data.mem) * 100:.1f} points (p10-p90), below "
                                         f"{MIN_CONTEXT_SPREAD * 100:.0f}"),
        }
        cal.interference[proc] = {}
        for k, (key, value) in enumerate((("cpu_interference", kc), ("mem_interference", km))):
            ok, why = spread_note[key]
            if key == "cpu_interference" and by_busy:
                lo, hi = _ci([b[k] for b in boot], value, shrink)
                cal.interference[proc][key] = Estimate(
                    value, lo, hi, note=f"from the stretch latency / busy time, busy time read "
                                        f"back from the {power.name} power model's energy")
            elif key in unstable:
                cal.interference[proc][key] = Estimate(
                    getattr(base_proc, key), fitted=False,
                    note=f"not identifiable: {unstable[key]}; base profile {base.name}'s value")
                cal.kept.append(f"processors.{proc}.{key}: {cal.interference[proc][key].note}")
            elif ok:
                lo, hi = _ci([b[k] for b in boot], value, shrink)
                cal.interference[proc][key] = Estimate(value, lo, hi)
            else:
                cal.interference[proc][key] = Estimate(
                    getattr(base_proc, key), fitted=False,
                    note=f"not identifiable: {why}; base profile {base.name}'s value")
                cal.kept.append(f"processors.{proc}.{key}: {cal.interference[proc][key].note}")
        for gi, (net, unit) in enumerate(keys):
            if not math.isfinite(base_ms[gi]):
                continue
            lo, hi = _ci([b[2][gi] for b in boot], base_ms[gi], shrink)
            cal.base_latency_ms.setdefault(net, {})[unit] = Estimate(base_ms[gi], lo, hi)
        for u, (_, t) in enumerate(cols):
            lo, hi = _ci([b[3][u] for b in boot], sigma[u], shrink)
            cal.noise_sigma[str(t)] = Estimate(sigma[u], lo, hi)
        # per (network, unit) interference around the pooled fit (report only: the schema has
        # one factor per processor)
        for gi, (net, unit) in enumerate(keys):
            sel = g == gi
            if sel.sum() >= 5:
                one = _LocalFit(y[sel], c[sel], m[sel], np.zeros(int(sel.sum()), np.int64),
                                cpu_ok, mem_ok, kc, km)
                kc1, km1, _ = one.fit()
                cal.interference_per_unit.setdefault(net, {})[unit] = {
                    "cpu_interference": kc1, "mem_interference": km1}
        # power
        _fit_power(cal, data, cols, proc, kc, base, base_proc, samples)


def _fit_power(cal: Calibration, data: _Data, cols, proc: str, kc: float,
               base: config.DeviceProfile, base_proc: config.ProcessorPower,
               samples: list[np.ndarray]) -> None:
    src = np.concatenate([data.source[:, j] for j, _ in cols])
    measured = np.isin(src, list(MEASURED_ENERGY))
    kinds = ", ".join(sorted(set(src.tolist())))
    if measured.mean() < 0.5:
        why = (f"not identifiable: the trace's {proc} energy is {kinds!r}, not measured "
               f"(rapl/nvml/measured); base profile {base.name}'s value")
        cal.power[proc] = {k: Estimate(getattr(base_proc, k), fitted=False, note=why)
                           for k in ("busy_power_w", "idle_power_w")}
        cal.kept.append(f"processors.{proc}.busy_power_w, idle_power_w: {why}")
        return

    def fit(rows: np.ndarray) -> tuple[float, float]:
        lat = np.concatenate([data.latency[rows, j] for j, _ in cols])
        e = np.concatenate([data.energy[rows, j] for j, _ in cols])
        cpu = np.tile(data.cpu[rows], len(cols))
        s = np.concatenate([data.source[rows, j] for j, _ in cols])
        ok = np.isin(s, list(MEASURED_ENERGY)) & np.isfinite(lat) & np.isfinite(e)
        busy = lat[ok] / (1.0 + kc * cpu[ok])
        wait = lat[ok] - busy
        X = np.column_stack([busy, wait])
        coef, *_ = np.linalg.lstsq(X, e[ok], rcond=None)
        return float(coef[0] - base.base_power_w), float(coef[1] - base.base_power_w)

    busy_w, idle_w = fit(np.arange(len(data.network)))
    boot = [fit(rows) for rows in samples]
    cal.power[proc] = {}
    for k, (key, value) in enumerate((("busy_power_w", busy_w), ("idle_power_w", idle_w))):
        lo, hi = _ci([b[k] for b in boot], value, getattr(samples, "shrink", 1.0))
        if key == "idle_power_w" and (not math.isfinite(lo) or hi - lo > max(1.0, 2 * abs(value))):
            why = (f"not identifiable: waiting time is too short or too rare to separate idle from "
                   f"busy power (fit {value:.3g} W [{lo:.3g}, {hi:.3g}]); base profile "
                   f"{base.name}'s value")
            cal.power[proc][key] = Estimate(getattr(base_proc, key), fitted=False, note=why)
            cal.kept.append(f"processors.{proc}.{key}: {why}")
        else:
            cal.power[proc][key] = Estimate(max(value, 0.0), lo, hi)


def _fit_remote(cal: Calibration, data: _Data, targets: list[Target],
                base: config.DeviceProfile, samples: list[np.ndarray]) -> None:
    links = config.load_links()
    catalog = config.load_workloads()
    up_kbit = np.array([catalog[n].input_bytes * 8e-3 for n in data.network.tolist()])
    down_kbit = np.array([catalog[n].output_bytes * 8e-3 for n in data.network.tolist()])
    networks = sorted(set(data.network.tolist()))
    code = {net: i for i, net in enumerate(networks)}
    net_code = np.array([code[x] for x in data.network.tolist()], dtype=np.int64)
    for j, t in enumerate(targets):
        if t.is_local:
            continue
        link = links["p2p" if t.location == "edge" else "wifi"]
        rssi = data.p2p if t.location == "edge" else data.wifi
        lat = data.latency[:, j]
        connected = rssi >= link.disconnect_rssi_dbm

        transfer, rtt = _link_ms(link, rssi, up_kbit, down_kbit)

        def server_medians(rows: np.ndarray, scale: float = 1.0):
            """Per network code, the median of latency minus the link at ``scale`` x its
            goodput (NaN for a network without a connected request); and the rest per row."""
            rest = lat[rows] - transfer[rows] / scale - rtt[rows]
            ok = connected[rows] & np.isfinite(rest)
            codes = net_code[rows]
            med = np.full(len(networks), math.nan)
            for i in range(len(networks)):
                sel = ok & (codes == i)
                if sel.any():
                    med[i] = np.median(rest[sel])
            return med, rest[ok] - med[codes[ok]]

        def server(rows: np.ndarray) -> dict[str, float]:
            med, _ = server_medians(rows)
            return {net: float(med[i]) for i, net in enumerate(networks) if math.isfinite(med[i])}

        def scale_fit(rows: np.ndarray) -> float:
            """Goodput scale minimising the absolute residuals, server latency re-fitted."""
            def loss(s: float) -> float:
                return float(np.abs(server_medians(rows, s)[1]).sum())
            grid = np.exp(np.linspace(np.log(0.25), np.log(4.0), 25))
            best = min(grid, key=loss)
            step = grid[1] / grid[0]
            for _ in range(4):
                step = math.sqrt(step)
                best = min((best / step, best, best * step), key=loss)
            return float(best)

        all_rows = np.arange(len(data.network))
        point = server(all_rows)
        boot = [server(rows) for rows in samples]
        out = {}
        for net, value in point.items():
            lo, hi = _ci([b.get(net, math.nan) for b in boot], value,
                         getattr(samples, "shrink", 1.0))
            if value <= 0:
                out[net] = Estimate(0.1, lo, hi, fitted=False,
                                    note=f"the link model alone exceeds the measured latency "
                                         f"(median rest {value:.3g} ms); floored at 0.1 ms")
            else:
                out[net] = Estimate(value, lo, hi)
        cal.server_latency_ms[str(t)] = out
        if _spread(rssi[connected]) >= 3.0:  # dB: the goodput must vary to be identified
            s = scale_fit(all_rows)
            boot_s = [scale_fit(rows) for rows in samples[: min(len(samples), 50)]]
            lo, hi = _ci(boot_s, s, getattr(samples, "shrink", 1.0))
            cal.link_goodput_scale[f"{link.name} ({t})"] = Estimate(s, lo, hi)
        else:
            cal.link_goodput_scale[f"{link.name} ({t})"] = Estimate(
                1.0, fitted=False, note="RSSI hardly varies: goodput not identifiable")


# --------------------------------------------------------------------------------------------
# Writing


def _m_of_n(cal: Calibration) -> str:
    if not cal.bootstrap_requests:
        return ""
    return (f"; {cal.bootstrap_requests} of the {cal.n_requests} requests per replicate, "
            f"intervals scaled by sqrt(m/n)")


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a TOML basic string is a JSON string


def _num(x: float) -> str:
    return repr(float(round(x, 6))) if abs(x) >= 1e-3 else repr(float(x))


def _server_profile(cal: Calibration, target: str, kind: str, base: config.DeviceProfile,
                    stem: str) -> str:
    t = Target.parse(target)
    base_server = config.load_device(base.edge if kind == "edge" else base.cloud)
    fitted = cal.server_latency_ms[target]
    lines = [
        f"# {kind} server of {cal.name}: {cal.source}.",
        f"# Written by autoscale calibrate {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}; "
        f"95 % CI from a moving-block bootstrap ({cal.bootstrap} replicates, blocks of "
        f"{cal.block_requests} requests{_m_of_n(cal)}).",
        "",
        f"name = {_q(f'{stem}_{kind}')}",
        f"display_name = {_q(f'{cal.name} {kind} server (fitted)')}",
        f"kind = {_q(kind)}",
        f"soc = {_q('as measured by the trace')}",
        f"targets = [{_q(target)}]",
        f"fallback_unit = {_q(t.unit)}",
        f"fallback_slowdown = {_num(base_server.fallback_slowdown)}",
        f"fallback_source = {_q(f'not identifiable (one unit); base {base_server.name} value')}",
        "overhead_ms = 0.0",
        "overhead_source = " + _q("fitted: per-request overhead (serialisation, socket, the "
                                  "server's dispatch) is folded into each latency row, which is "
                                  "the measured latency minus the link model's transfer and RTT"),
        "",
    ]
    for net in config.load_workloads():
        lines.append(f"[latency_ms.{net}]")
        if net in fitted:
            e = fitted[net]
            lines.append(f"{_q(t.unit)} = {_num(e.value)}")
            how = e.text("ms") if e.fitted else f"{_g(e.value)} ms ({e.note}) CI [{_g(e.low)}, {_g(e.high)}]"
            lines.append(f"source = {_q(f'{cal.source}: {t.unit} {how}')}")
        else:
            unit, ms = base_server.unit_latency_ms(net, t.unit)
            lines.append(f"{_q(t.unit)} = {_num(ms)}")
            lines.append(f"source = {_q(f'not in the trace: base {base_server.name} {unit} value')}")
        lines.append("")
    return "\n".join(lines)


def render_profile(cal: Calibration, stem: str) -> dict[str, str]:
    """The profile files' text: ``{file name: TOML}`` (the phone's, plus edge/cloud servers)."""
    base = config.load_device(cal.base)
    files: dict[str, str] = {}
    edge, cloud = base.edge, base.cloud  # bundled names, or absolute paths of files
    for target in cal.server_latency_ms:
        kind = Target.parse(target).location
        fname = f"{stem}_{kind}.toml"
        files[fname] = _server_profile(cal, target, kind, base, stem)
        if kind == "edge":
            edge = fname
        else:
            cloud = fname
    local_units = [Target.parse(t).unit for t in cal.targets if Target.parse(t).is_local]
    procs = sorted({u.split("/")[0] for u in local_units})
    lines = [
        f"# {cal.name}: a device profile {cal.source}.",
        f"# Written by autoscale calibrate {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} "
        f"(base profile for what the trace cannot identify: {base.name}).",
        f"# 95 % confidence intervals in brackets: moving-block bootstrap ({cal.bootstrap} "
        f"replicates, blocks of {cal.block_requests} requests{_m_of_n(cal)}).",
        "# Noise (robust sigma of log latency around the fit; the simulator takes its noise from "
        "settings.toml):",
    ]
    for target, e in cal.noise_sigma.items():
        lines.append(f"#   {target}: {e.text()}")
    for link, e in cal.link_goodput_scale.items():
        lines.append(f"# Link goodput scale, measured / links.toml model, {link}: {e.text()}")
    for w in cal.warnings:
        lines.append(f"# WARNING: {w}")
    lines.append("# Kept from the base profile:")
    for k in cal.kept:
        lines.append(f"#   {k}")
    lines += [
        "",
        f"name = {_q(cal.name)}",
        f"display_name = {_q(f'{cal.name} (fitted)')}",
        'kind = "phone"',
        f"soc = {_q('as measured by ' + ', '.join(Path(p).name for p in cal.traces))}",
        f"edge = {_q(edge)}",
        f"cloud = {_q(cloud)}",
        "targets = [" + ", ".join(_q(t) for t in cal.targets) + "]",
        f"fallback_unit = {_q(base.fallback_unit)}",
        f"fallback_slowdown = {_num(base.fallback_slowdown)}",
        f"fallback_source = {_q(f'not identifiable (every target ran its own unit): base {base.name} value')}",
        "",
        "[base]",
        f"power_w = {_num(base.base_power_w)}",
        f"wifi_active_w = {_num(base.wifi_active_w)}",
        f"source = {_q(f'not identifiable (base and radio power need a battery-level meter): base {base.name} values')}",
        "",
    ]
    for proc in procs:
        inter, power = cal.interference[proc], cal.power[proc]
        lines.append(f"[processors.{proc}]")
        for key, e in {**power, **inter}.items():
            lines.append(f"{key} = {_num(e.value)}")
        text = "; ".join(f"{k} {e.text()}" for k, e in {**inter, **power}.items())
        lines.append(f"source = {_q(f'{cal.source}: {text}')}")
        lines.append("")
    for net in config.load_workloads():
        lines.append(f"[latency_ms.{net}]")
        fitted = cal.base_latency_ms.get(net, {})
        units = list(dict.fromkeys([base.fallback_unit] + local_units))
        parts = []
        for unit in units:
            if unit in fitted:
                e = fitted[unit]
                lines.append(f"{_q(unit)} = {_num(e.value)}")
                parts.append(f"{unit} {e.text('ms')}")
            elif unit in base.latency_ms[net]:
                lines.append(f"{_q(unit)} = {_num(base.latency_ms[net][unit])}")
                parts.append(f"{unit} not in the trace: base {base.name} value")
        k = cal.requests_per_network.get(net, 0)
        head = f"{cal.source}, {k} of {net}" if fitted else "not in the trace"
        lines.append(f"source = {_q(f'{head}: ' + '; '.join(parts))}")
        lines.append("")
    files[f"{stem}.toml"] = "\n".join(lines)
    return files


def write_profile(cal: Calibration, out: str | os.PathLike, *, force: bool = False,
                  report: bool = True) -> list[Path]:
    """Write the profile (and its server profiles and ``<stem>.calibration.json``) atomically.

    Refuses to replace any existing file unless ``force``; then checks that the written profile
    loads (``config.load_device``) before returning.
    """
    out = Path(out)
    if out.suffix != ".toml":
        raise CalibrationError(f"--out {out}: a profile is a .toml file")
    stem = out.stem
    files = render_profile(cal, stem)
    if report:
        files[f"{stem}.calibration.json"] = json.dumps(cal.to_json(), indent=1) + "\n"
    paths = [out.parent / name for name in files]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --force to replace")
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in zip(paths, files.values()):
        atomic_write(path, text)
    config.load_device.cache_clear()
    config.load_device(str(out))  # the written profile must load
    return paths


# --------------------------------------------------------------------------------------------
# CLI


def summary(cal: Calibration) -> str:
    """A short human-readable report of the fit."""
    out = [f"{cal.name}: {cal.source}"] + [f"  WARNING: {w}" for w in cal.warnings]
    for proc, d in cal.interference.items():
        out.append(f"  {proc}: " + "; ".join(f"{k} {e.text()}" for k, e in
                                             {**d, **cal.power[proc]}.items()))
    for target, e in cal.noise_sigma.items():
        out.append(f"  noise sigma {target}: {e.text()}")
    for proc, d in cal.interference_ps.items():
        params = ", ".join(f"{k} {v:.3g}" + (f" [{d['ci95'][k][0]:.3g}, {d['ci95'][k][1]:.3g}]"
                                             if k in d["ci95"] else "")
                           for k, v in d["params"].items())
        out.append(f"  {proc} processor sharing ({d['form']} form, report only): {params}; median "
                   f"|log error| {d['median_abs_log_error']:.3f} vs linear "
                   f"{d['linear_median_abs_log_error']:.3f}")
    for target, d in cal.server_latency_ms.items():
        out.append(f"  {target} server ms: " + ", ".join(f"{n} {e.value:.1f}" for n, e in d.items()))
    for link, e in cal.link_goodput_scale.items():
        out.append(f"  goodput scale {link}: {e.text()}")
    return "\n".join(out)
