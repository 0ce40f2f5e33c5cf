"""``autoscale drift``: how agents cope when the world shifts under them.

For each (agent, shift, seed) one online run on the ``drift`` backend
(:mod:`autoscale_env.backends.drift`): the agent learns from request 0 on, the world shifts at
request ``shift_at`` and the agent keeps learning for ``after`` more requests (one endless episode,
no ``TimeLimit``, so the request index is the step index). Every executed request is scored
against every target's outcome of that request:

* ``regret``: the oracle's reward minus the agent's (the oracle of drift is myopic: under the
  thermal shift it ignores the heat its choice adds);
* ``near_optimal``: the chosen target meets both targets and uses at most 5 % more energy than the
  oracle's choice (when no target meets both, only the oracle's own choice counts).

Reported per shift: ``regret_1000`` (summed over the 1,000 requests after the shift; compare
``regret_1000_pre``, the 1,000 before it, which is the price of exploration), the near-optimal
rate before (``pre_rate``, the 2,000 requests before the shift) and after, and ``recovery``: the
fewest requests ``k`` after the shift such that the rate over ``[shift + k, shift + k + window)``
is back to 90 % of ``pre_rate`` (0: never fell below; empty: not within the run). For learners
this is online performance (exploration included), which is what a deployed learner pays.

The slack is :data:`agents.experiments.evaluation.NEAR_OPTIMAL_SLACK`, the benchmark's ``near_optimal_rate``
threshold; the one difference is per request, where no target meets both targets: the benchmark
counts no choice as near-optimal there, the drift runner counts the oracle's own choice (so a
windowed rate is not dragged down by requests nobody could serve).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from agents import agent_class, make_agent
from agents.experiments.evaluation import NEAR_OPTIMAL_SLACK
from autoscale_env.backends.drift import DriftBackend, load_drift
from autoscale_env.env import AutoScaleEnv
from autoscale_env.world.files import atomic_write

logger = logging.getLogger(__name__)

#: A choice within this fraction of the oracle's energy (meeting both targets) is near-optimal.
NEAR_OPTIMAL_ENERGY_SLACK = NEAR_OPTIMAL_SLACK
#: The local targets the thermal probe keeps running ("a policy that keeps running locally").
THERMAL_PROBE_TARGETS = ("local/cpu/fp32", "local/gpu/fp16")

RESULT_COLUMNS = ["agent", "shift", "seed", "device", "scenario", "shift_at", "pre_rate",
                  "post_rate_1000", "final_rate", "regret_1000", "regret_1000_pre", "recovery",
                  "energy_mj_pre", "energy_mj_post", "qos_violation_pre", "qos_violation_post",
                  "local_share_pre", "local_share_post", "max_temperature_c", "throttled_share_post",
                  "slowdown_post"]
PROBE_COLUMNS = ["shift", "target", "window_start", "window_end", "latency_ms", "energy_mj",
                 "qos_violation_rate", "temperature_c", "slowdown"]


def near_optimal(action: int, oracle: int, qos_met: bool, accuracy_met: bool, energy_mj: float,
                 oracle_energy_mj: float, oracle_feasible: bool) -> bool:
    """The near-optimal test of one executed request (module docstring)."""
    if action == oracle:
        return True
    return bool(oracle_feasible and qos_met and accuracy_met
                and energy_mj <= (1.0 + NEAR_OPTIMAL_ENERGY_SLACK) * oracle_energy_mj)


@dataclass(frozen=True)
class DriftConfig:
    """Options of a drift run."""

    device: str = "mi8pro"
    shift_at: int | None = None
    """Request index of the shift (default: ``drift.toml``'s ``[run] shift_at``)."""
    after: int | None = None
    """Requests run after the shift (default: ``[run] after``)."""
    window: int = 500
    """Requests per window of the near-optimal rate (recovery, figures)."""
    pre_window: int = 2000
    """Requests before the shift that define the pre-shift rate."""
    regret_window: int = 1000
    """Requests after the shift whose regret is summed."""
    recovery_fraction: float = 0.9
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolved(self) -> tuple[int, int]:
        run, _ = load_drift()
        shift_at = run.shift_at if self.shift_at is None else self.shift_at
        after = run.after if self.after is None else self.after
        if shift_at < self.pre_window:
            raise ValueError(f"shift_at ({shift_at}) must be >= pre_window ({self.pre_window})")
        if after < max(self.window, self.regret_window):
            raise ValueError(f"after ({after}) must be >= the window ({self.window}) and the "
                             f"regret window ({self.regret_window})")
        return shift_at, after


@dataclass
class RunRecord:
    """Per-request record of one run (index = request = step)."""

    near_optimal: np.ndarray
    regret: np.ndarray
    energy_mj: np.ndarray
    latency_ms: np.ndarray
    qos_met: np.ndarray
    local: np.ndarray
    temperature_c: np.ndarray | None = None
    slowdown: np.ndarray | None = None
    """Thermal only: the CPU/GPU latency factor (1 / frequency fraction) the request ran under."""


class _Recorder:
    """The learn() callback (and the loop of non-learners): scores each executed request."""

    def __init__(self, env: AutoScaleEnv, n: int):
        self.env = env
        self.n = n
        self.t = 0
        self.near = np.zeros(n, dtype=bool)
        self.regret = np.zeros(n)
        self.energy = np.zeros(n)
        self.latency = np.zeros(n)
        self.qos = np.zeros(n, dtype=bool)
        self.local = np.zeros(n, dtype=bool)
        backend = env.backend
        self.temperature = np.zeros(n) if hasattr(backend, "temperature_c") else None
        self.slowdown = np.zeros(n) if hasattr(backend, "frequency_fraction") else None
        self._is_local = [t.is_local for t in env.targets]
        self._pending: tuple | None = None
        self._qos_ms = env.scenario.qos_ms
        self._accuracy_target = {w.name: w.accuracy["fp32"] - env.scenario.accuracy_tolerance
                                 for w in env.workloads}

    def _capture(self) -> None:
        u = self.env
        cf = u.counterfactuals()
        oracle = u.oracle_action()
        feasible = bool(cf["latency_ms"][oracle] <= self._qos_ms
                        and cf["accuracy"][oracle] >= self._accuracy_target[u.context["network"]])
        self._pending = (oracle, float(cf["reward"][oracle]), float(cf["energy_mj"][oracle]),
                         feasible)

    def on_reset(self, info: dict[str, Any]) -> None:
        self._capture()

    def on_step(self, action: int, reward: float, info: dict[str, Any]) -> bool:
        t = self.t
        if t >= self.n:
            return False
        oracle, oracle_reward, oracle_energy, feasible = self._pending
        a = int(action)
        self.near[t] = near_optimal(a, oracle, info["qos_met"], info["accuracy_met"],
                                    info["energy_mj"], oracle_energy, feasible)
        self.regret[t] = oracle_reward - reward
        self.energy[t] = info["energy_mj"]
        self.latency[t] = info["latency_ms"]
        self.qos[t] = info["qos_met"]
        self.local[t] = self._is_local[a]
        if self.temperature is not None:
            self.temperature[t] = self.env.backend.temperature_c
        if self.slowdown is not None:
            self.slowdown[t] = 1.0 / self.env.backend.frequency_fraction
        self.t = t + 1
        self._capture()
        return True

    def record(self) -> RunRecord:
        if self.t != self.n:
            raise RuntimeError(f"the run stopped after {self.t} of {self.n} requests")
        return RunRecord(self.near, self.regret, self.energy, self.latency, self.qos, self.local,
                     self.temperature, self.slowdown)


def run_one(agent: str, shift: str, seed: int, cfg: DriftConfig, *,
            progress: bool = False) -> RunRecord:
    """One online run of ``agent`` through ``shift`` (see the module docstring)."""
    shift_at, after = cfg.resolved()
    total = shift_at + after
    cls = agent_class(agent)
    obs_mode = cls.env_kwargs.get("obs_mode", "paper")
    env = AutoScaleEnv(backend=DriftBackend(device=cfg.device, shift=shift, shift_at=shift_at),
                       obs_mode=obs_mode)
    recorder = _Recorder(env, total)
    try:
        learner = make_agent(agent, env, seed=seed, **cfg.hyperparameters.get(agent, {}))
        if cls.learns:
            learner.learn(total, callback=recorder, progress_bar=progress)
        else:
            obs, info = env.reset(seed=seed)
            recorder.on_reset(info)
            for _ in range(total):
                action, _ = learner.predict(obs, deterministic=True)
                obs, reward, _, _, info = env.step(int(action))
                recorder.on_step(int(action), reward, info)
    finally:
        env.close()
    return recorder.record()


def _first_recovery(near: np.ndarray, shift_at: int, window: int, level: float) -> int | None:
    """Fewest ``k >= 0`` with mean(near[shift_at + k : shift_at + k + window]) >= level."""
    c = np.concatenate([[0], np.cumsum(near[shift_at:], dtype=np.int64)])
    if len(c) <= window:
        return None
    rates = (c[window:] - c[:-window]) / window
    hit = np.flatnonzero(rates >= level - 1e-12)
    return int(hit[0]) if len(hit) else None


def metrics(record: RunRecord, shift_at: int, cfg: DriftConfig) -> dict[str, Any]:
    """The reported figures of one run."""
    pre = slice(shift_at - cfg.pre_window, shift_at)
    post = slice(shift_at, shift_at + cfg.regret_window)
    pre_rate = float(record.near_optimal[pre].mean())
    recovery = _first_recovery(record.near_optimal, shift_at, cfg.window,
                               cfg.recovery_fraction * pre_rate)
    return {
        "pre_rate": pre_rate,
        "post_rate_1000": float(record.near_optimal[post].mean()),
        "final_rate": float(record.near_optimal[-cfg.window:].mean()),
        "regret_1000": float(record.regret[post].sum()),
        "regret_1000_pre": float(record.regret[shift_at - cfg.regret_window:shift_at].sum()),
        "recovery": "" if recovery is None else recovery,
        "energy_mj_pre": float(record.energy_mj[pre].mean()),
        "energy_mj_post": float(record.energy_mj[shift_at:].mean()),
        "qos_violation_pre": float(1.0 - record.qos_met[pre].mean()),
        "qos_violation_post": float(1.0 - record.qos_met[shift_at:].mean()),
        "local_share_pre": float(record.local[pre].mean()),
        "local_share_post": float(record.local[shift_at:].mean()),
        # thermal only (empty otherwise): how hot the agent's own choices made the phone
        "max_temperature_c": "" if record.temperature_c is None else float(record.temperature_c.max()),
        "throttled_share_post": "" if record.slowdown is None
        else float((record.slowdown[shift_at:] > 1.0).mean()),
        "slowdown_post": "" if record.slowdown is None else float(record.slowdown[shift_at:].mean()),
    }


def windowed(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` requests (NaN until the first full window)."""
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    out = np.full(len(x), np.nan)
    out[window - 1:] = (c[window:] - c[:-window]) / window
    return out


def thermal_probe(shift: str, cfg: DriftConfig, targets: Sequence[str] = THERMAL_PROBE_TARGETS,
                  seed: int = 0, width: int = 1000) -> list[dict[str, Any]]:
    """A policy that keeps running on one local target: latency and temperature per window."""
    shift_at, after = cfg.resolved()
    rows = []
    for target in targets:
        backend = DriftBackend(device=cfg.device, shift=shift, shift_at=shift_at)
        env = AutoScaleEnv(backend=backend)
        a = env.target_index(target)
        recorder = _Recorder(env, shift_at + after)
        obs, info = env.reset(seed=seed)
        recorder.on_reset(info)
        for _ in range(shift_at + after):
            obs, reward, _, _, info = env.step(a)
            recorder.on_step(a, reward, info)
        tr = recorder.record()
        for start in range(shift_at - 2 * width, shift_at + after, width):
            s = slice(start, start + width)
            rows.append({"shift": shift, "target": target, "window_start": start - shift_at,
                         "window_end": start + width - shift_at,
                         "latency_ms": float(tr.latency_ms[s].mean()),
                         "energy_mj": float(tr.energy_mj[s].mean()),
                         "qos_violation_rate": float(1.0 - tr.qos_met[s].mean()),
                         "temperature_c": float(tr.temperature_c[s].mean()),
                         "slowdown": float(tr.slowdown[s].mean())})
    return rows


# ----------------------------------------------------------------------------------------------
# The whole suite


def run_suite(agents: Sequence[str], shifts: Sequence[str], seeds: int, cfg: DriftConfig,
              out: str | Path, *, force: bool = False, progress: bool = True,
              figures: bool = True) -> str:
    """Run every (agent, shift, seed), write ``drift.csv``, ``curves.csv``,
    ``thermal_probe.csv``, ``summary.md`` and figures to ``out``; returns the summary."""
    out = Path(out)
    if (out / "drift.csv").exists() and not force:
        raise FileExistsError(f"{out / 'drift.csv'} already exists; pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    shift_at, after = cfg.resolved()
    _, catalog = load_drift()
    rows: list[dict[str, Any]] = []
    lo = max(shift_at - cfg.pre_window, cfg.window - 1)  # curves start at the first full window
    curves: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    runs = [(s, a, seed) for s in shifts for a in agents for seed in range(seeds)]
    with tqdm(total=len(runs), disable=not progress, desc="drift", unit="run") as bar:
        for shift, agent, seed in runs:
            bar.set_postfix_str(f"{agent} {shift} s{seed}")
            record = run_one(agent, shift, seed, cfg)
            rows.append({"agent": agent, "shift": shift, "seed": seed, "device": cfg.device,
                         "scenario": catalog[shift].scenario, "shift_at": shift_at,
                         **metrics(record, shift_at, cfg)})
            curves[(shift, agent)].append(windowed(record.near_optimal, cfg.window)[lo:])
            bar.update(1)
    probe = []
    for shift in shifts:
        if catalog[shift].kind == "thermal":
            probe += thermal_probe(shift, cfg)
    _write_csv(out / "drift.csv", RESULT_COLUMNS, rows)
    step = 50
    curve_rows = [{"shift": s, "agent": a, "offset": lo + int(k) - shift_at,
                   "near_optimal_rate": float(np.nanmean([c[k] for c in cs]))}
                  for (s, a), cs in curves.items() for k in range(0, len(cs[0]), step)]
    _write_csv(out / "curves.csv", ["shift", "agent", "offset", "near_optimal_rate"], curve_rows)
    if probe:
        _write_csv(out / "thermal_probe.csv", PROBE_COLUMNS, probe)
    atomic_write(out / "config.json", json.dumps(
        {"agents": list(agents), "shifts": list(shifts), "seeds": seeds, **asdict(cfg),
         "shift_at": shift_at, "after": after}, indent=1))
    text = summarize(rows, probe, cfg, shift_at, catalog)
    atomic_write(out / "summary.md", text)
    if figures:
        write_figures(curve_rows, out, cfg)
    return text


def summarize(rows: Sequence[dict[str, Any]], probe: Sequence[dict[str, Any]], cfg: DriftConfig,
              shift_at: int, catalog: dict) -> str:
    """Markdown: per shift and agent, means over seeds (recovery: median, '>N' if not recovered)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["shift"], r["agent"])].append(r)
    lines = ["# Drift summary", "",
             f"Shift at request {shift_at}; near-optimal = meets both targets within "
             f"{NEAR_OPTIMAL_ENERGY_SLACK:.0%} of the oracle's energy; recovery = requests until "
             f"the rate over a {cfg.window}-request window is back to "
             f"{cfg.recovery_fraction:.0%} of the pre-shift rate (median over seeds; "
             f"'never' = not within the run). Online learning throughout. Means over seeds.", "",
             "| shift | agent | seeds | near-opt. before (%) | near-opt. 1k after (%) | "
             "near-opt. at end (%) | regret 1k before | regret 1k after | recovery (requests) | "
             "QoS viol. after (%) | local share before/after (%) |",
             "|" + "---|" * 11]
    for (shift, agent), rs in groups.items():
        mean = {k: statistics.fmean(float(r[k]) for r in rs) for k in
                ("pre_rate", "post_rate_1000", "final_rate", "regret_1000", "regret_1000_pre",
                 "qos_violation_post", "local_share_pre", "local_share_post")}
        rec = [r["recovery"] for r in rs]
        rec_num = sorted(float("inf") if v == "" else float(v) for v in rec)
        med = statistics.median(rec_num)
        rec_text = "never" if med == float("inf") else f"{med:.0f}"
        if any(v == "" for v in rec) and med != float("inf"):
            rec_text += f" ({sum(v == '' for v in rec)} never)"
        lines.append(
            f"| {shift} | {agent} | {len(rs)} | {100 * mean['pre_rate']:.1f} | "
            f"{100 * mean['post_rate_1000']:.1f} | {100 * mean['final_rate']:.1f} | "
            f"{mean['regret_1000_pre']:.0f} | {mean['regret_1000']:.0f} | {rec_text} | "
            f"{100 * mean['qos_violation_post']:.1f} | "
            f"{100 * mean['local_share_pre']:.0f}/{100 * mean['local_share_post']:.0f} |")
    thermal = [(k, rs) for k, rs in groups.items() if rs[0]["max_temperature_c"] != ""]
    if thermal:
        lines += ["", "Heat the agents' own choices caused (thermal shifts; means over seeds):", "",
                  "| shift | agent | max. temperature (C) | requests after the shift run throttled (%) "
                  "| mean CPU/GPU slowdown after (x) |", "|---|---|---|---|---|"]
        for (shift, agent), rs in thermal:
            lines.append(
                f"| {shift} | {agent} | "
                f"{statistics.fmean(float(r['max_temperature_c']) for r in rs):.1f} | "
                f"{100 * statistics.fmean(float(r['throttled_share_post']) for r in rs):.0f} | "
                f"{statistics.fmean(float(r['slowdown_post']) for r in rs):.2f} |")
    lines += ["", "Shifts:", ""]
    for shift in dict.fromkeys(r["shift"] for r in rows):
        s = catalog[shift]
        lines.append(f"* `{shift}` ({s.scenario}): {s.description}")
    if probe:
        lines += ["", "Thermal probe: a policy that keeps running on one local target (seed 0); "
                  "windows of 1,000 requests relative to the shift. Latency also moves with the "
                  "network mix and co-running load; the thermal slowdown factor isolates the heat.",
                  "", "| target | window | latency (ms) | thermal slowdown (x) | energy (mJ) | "
                  "QoS viol. (%) | temperature (C) |", "|---|---|---|---|---|---|---|"]
        for p in probe:
            lines.append(f"| {p['target']} | [{p['window_start']}, {p['window_end']}) | "
                         f"{p['latency_ms']:.1f} | {p['slowdown']:.2f} | {p['energy_mj']:.1f} | "
                         f"{100 * p['qos_violation_rate']:.1f} | {p['temperature_c']:.1f} |")
    return "\n".join(lines) + "\n"


def write_figures(curve_rows: Sequence[dict[str, Any]], out: Path, cfg: DriftConfig) -> Path | None:
    """``drift.png``: the windowed near-optimal rate around each shift, one panel per shift."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no figures; pip install 'autoscale-env[plots]'")
        return None
    by_shift: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in curve_rows:
        by_shift[r["shift"]][r["agent"]].append((r["offset"], r["near_optimal_rate"]))
    n = len(by_shift)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=True)
    for ax, (shift, agents) in zip(axes[0], by_shift.items()):
        for agent, pts in agents.items():
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=agent, lw=1.2)
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.set_title(shift)
        ax.set_xlabel("requests since the shift")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"near-optimal rate ({cfg.window}-request window)")
    axes[0][-1].legend(fontsize=8)
    path = out / "drift.png"
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def _write_csv(path: Path, columns: list[str], rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    atomic_write(path, buf.getvalue().encode("utf-8"))  # bytes: the csv module's own line ends
