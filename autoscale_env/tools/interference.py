"""How co-running CPU load slows inference: the linear model and processor sharing (pure functions).

The world's rules (:mod:`autoscale_env.world.power`) stretch an inference's busy time by
``1 + cpu_interference x u``, ``u`` the co-running CPU utilisation (0..1). That line has no knee
and no saturation: it cannot say that an inference is not slowed while spare cores exist, nor
that it is slowed without bound when the machine is oversubscribed, which is what the host's
live traces show (co-running load pinned at 90-99 %, latency 2-5x its busy time and varying with
the run queue the utilisation cannot see).

**Processor sharing.** ``m`` inference threads and ``k`` always-runnable co-running threads share
``n`` cores fairly (Linux CFS, Android's EAS within a cluster): while ``m + k <= n`` every thread
has a core; beyond, each gets ``n / (m + k)`` of one, so the inference takes
``max(1, (m + k) / n)`` times its busy time. What the trace gives is ``u``, and how ``k`` follows
from it depends on what ``u`` measured:

* ``form="demand"``: ``u`` is the co-runners' *demand* as a fraction of the cores, measured (or,
  in the sim, drawn) independently of the inference, as the simulator's context is. With ``k =
  b' u`` threads at full load, ``stretch = max(1, a + b u)``, ``a = m / n`` (the inference's
  threads per core), ``b = k_max / n`` (co-running threads per core at u = 1). With ``a = 1`` it is
  exactly the linear model with ``cpu_interference = b``: the phones' factors carry over as they
  are (``mi8pro``: 4 threads on 4 big cores, ``a = 1``, ``b = 1.5``). ``a < 1`` adds the knee: no
  slowdown until the co-runners take the cores the inference leaves free.
* ``form="share"``: ``u`` is the co-runners' measured *share* of the cores over the inference (what
  the live backend's monitor reports). Under processor sharing the co-runners' share is ``k / (m
  + k)`` once the machine is full, so ``stretch = max(1, a / (1 - u))``: the stretch is a
  function of the measured share, whatever the threads' weights, and it grows without bound as
  the share nears 1, where a linear fit (and any demand-form fit, whose ``u`` saturates) has
  nothing left to fit. ``u`` is clipped at :data:`MAX_SHARE`.

:func:`fit` fits either model (or the linear one, for comparison) by least absolute deviations of
log latency with one base latency per group (network x unit), the same criterion as
``autoscale calibrate``; :func:`bootstrap` gives their 95 % intervals. ``autoscale calibrate``
reports the processor-sharing fit beside the linear one (``Calibration.interference_ps``). These
functions are not yet the world's rules: ``docs/own-device.md`` (section "Interference: processor
sharing") says how they would replace the linear factor in ``world/power.py`` and
``world/rules.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FORMS", "MAX_SHARE", "Fit", "bootstrap", "fit", "stretch"]

#: Models :func:`stretch` evaluates.
FORMS = ("linear", "demand", "share")
#: Largest co-running share used by the ``share`` form (1 - share >= 1 %: the stretch at most 100 a).
MAX_SHARE = 0.99
#: Parameter grids searched (then refined around the best point).
_GRIDS = {
    "linear": (np.linspace(0.0, 20.0, 81),),
    "demand": (np.linspace(0.0, 1.0, 21), np.linspace(0.0, 20.0, 41)),
    "share": (np.linspace(0.0, 1.0, 81),),
}
#: Upper bounds of the parameters: ``a = m / n`` <= 1 (no more inference threads than cores; a
#: larger ``a`` only rescales the base latency, which is then not identified).
_UPPER = {"linear": (math.inf,), "demand": (1.0, math.inf), "share": (1.0,)}
_NAMES = {"linear": ("cpu_interference",), "demand": ("a", "b"), "share": ("a",)}


def stretch(u: np.ndarray, form: str, params: Sequence[float]) -> np.ndarray:
    """Latency over busy time at co-running CPU ``u`` (fraction, 0..1) under model ``form``.

    ``linear``: ``1 + k u`` (params ``(k,)``, the world's current rule); ``demand``: ``max(1, a +
    b u)`` (params ``(a, b)``); ``share``: ``max(1, a / (1 - min(u, MAX_SHARE)))`` (params
    ``(a,)``). See the module docstring for what ``a`` and ``b`` mean; :func:`fit` keeps ``a`` in
    [0, 1] (beyond, ``a`` only rescales the base latency).
    """
    u = np.asarray(u, dtype=float)
    if form == "linear":
        (k,) = params
        return 1.0 + k * u
    if form == "demand":
        a, b = params
        return np.maximum(1.0, a + b * u)
    if form == "share":
        (a,) = params
        return np.maximum(1.0, a / (1.0 - np.minimum(u, MAX_SHARE)))
    raise ValueError(f"form {form!r}: valid: {', '.join(FORMS)}")


@dataclass(frozen=True)
class Fit:
    """One model fitted to (log latency, u, group) rows."""

    form: str
    params: dict[str, float]
    base_ms: np.ndarray
    """Per group: the latency with no co-running load (exp of the median log residual)."""
    median_abs_log_error: float
    """Median ``|log(fitted / measured)|`` over the rows: the gap figure of ``autoscale gap``."""

    def predict_ms(self, u: np.ndarray, group: np.ndarray) -> np.ndarray:
        """Fitted latency (ms) of rows with co-running ``u`` in ``group``."""
        return self.base_ms[group] * stretch(u, self.form, tuple(self.params.values()))


class _Rows:
    """Rows sorted by group once, so each loss evaluation is a split and per-group medians."""

    def __init__(self, y: np.ndarray, u: np.ndarray, group: np.ndarray):
        order = np.argsort(group, kind="stable")
        self.y, self.u, self.group = y[order], u[order], group[order]
        self.bounds = np.flatnonzero(np.diff(self.group)) + 1
        self.present = self.group[np.r_[0, self.bounds]] if len(self.group) else self.group
        self.n_groups = int(group.max()) + 1 if len(group) else 0

    def loss(self, form: str, params: Sequence[float]) -> tuple[float, np.ndarray]:
        r = self.y - np.log(stretch(self.u, form, params))
        parts = np.split(r, self.bounds)
        med = np.full(self.n_groups, np.nan)
        med[self.present] = [np.median(p) for p in parts]
        return float(sum(np.abs(p - m).sum() for p, m in zip(parts, med[self.present]))), med


def fit(latency_ms: np.ndarray, u: np.ndarray, group: np.ndarray | None = None,
        form: str = "share") -> Fit:
    """Fit ``form`` by least absolute deviations of log latency, one base latency per group.

    Args:
        latency_ms: measured latencies (> 0).
        u: co-running CPU of each row, fraction 0..1.
        group: integer group per row (network x unit), default one group.
        form: ``linear``, ``demand`` or ``share``.
    """
    if form not in FORMS:
        raise ValueError(f"form {form!r}: valid: {', '.join(FORMS)}")
    y = np.log(np.asarray(latency_ms, dtype=float))
    u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
    group = np.zeros(len(y), np.int64) if group is None else np.asarray(group, np.int64)
    if not (len(y) == len(u) == len(group)) or not len(y):
        raise ValueError(f"latency_ms, u and group must be equally long and non-empty, got "
                         f"{len(y)}, {len(u)}, {len(group)}")
    rows = _Rows(y, u, group)
    grids = _GRIDS[form]
    best = min((rows.loss(form, p)[0], p)
               for p in (tuple(x) for x in np.array(np.meshgrid(*grids)).reshape(len(grids), -1).T))
    loss, params = best
    steps = [g[1] - g[0] for g in grids]
    for _ in range(8):  # refine on a 5-point grid per parameter around the best, halving steps
        cands = np.array(np.meshgrid(*[p + s * np.array([-1, -0.5, 0, 0.5, 1])
                                       for p, s in zip(params, steps)]))
        for p in cands.reshape(len(grids), -1).T:
            p = tuple(min(hi, max(0.0, float(x))) for x, hi in zip(p, _UPPER[form]))
            lp = rows.loss(form, p)[0]
            if lp < loss:
                loss, params = lp, p
        steps = [s / 2 for s in steps]
    _, med = rows.loss(form, params)
    pred = med[group] + np.log(stretch(u, form, params))
    return Fit(form=form, params=dict(zip(_NAMES[form], (float(p) for p in params))),
               base_ms=np.exp(med), median_abs_log_error=float(np.median(np.abs(pred - y))))


def bootstrap(latency_ms: np.ndarray, u: np.ndarray, group: np.ndarray | None = None,
              form: str = "share", replicates: int = 100, block: int = 10,
              seed: int = 0) -> dict[str, tuple[float, float]]:
    """95 % intervals of :func:`fit`'s parameters from a moving-block bootstrap over rows
    (blocks of consecutive rows keep correlated load segments together, as calibrate does)."""
    latency_ms, u = np.asarray(latency_ms, float), np.asarray(u, float)
    group = np.zeros(len(u), np.int64) if group is None else np.asarray(group, np.int64)
    rng = np.random.default_rng(seed)
    n = len(u)
    b = max(1, min(block, n))
    draws: dict[str, list[float]] = {k: [] for k in _NAMES[form]}
    for _ in range(int(replicates)):
        starts = rng.integers(0, n - b + 1, size=math.ceil(n / b))
        idx = (starts[:, None] + np.arange(b)).reshape(-1)[:n]
        f = fit(latency_ms[idx], u[idx], group[idx], form)
        for k, v in f.params.items():
            draws[k].append(v)
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
            for k, v in draws.items()}
