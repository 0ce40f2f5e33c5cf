"""The sim-to-real gap of a profile against a measured trace: ``autoscale gap``.

    autoscale gap --trace T [--trace T2 ...] --profile P [--out runs/gap]

For each trace, every request's context (network, co-running CPU and memory, both RSSIs) is
replayed through the simulator built from the profile, noise-free (``SimBackend.expected``: the
median outcome the profile predicts there), and compared with what was measured:

* **error per target**: median and 90th percentile of ``|log(sim / measured)|`` of latency and
  energy (0.1 is about 10 %);
* **oracle agreement**: the share of requests where the best target under the reward (lowest
  energy meeting the QoS and accuracy targets) is the same in the sim and in the trace, and the
  energy the sim's oracle choices cost on the trace over the trace's own oracle (the regret of a
  perfect sim-trained planner);
* **sim-to-real regret** of the paper's Q-learner: one trained for ``--train-steps`` in the fitted
  sim and one trained on the trace itself (replay backend, shuffled), both evaluated greedily on
  the trace's requests in order; the regret is the energy per request the sim-trained policy
  spends beyond the trace-trained one (the latter is evaluated on the requests it trained on, so
  it is the optimistic in-sample reference), with QoS violation rates beside it, and the share of
  the trace's requests whose state the sim showed the learner at least 20 times (a policy cannot
  transfer to states its training world rarely produces). The fitted world is the profile's
  outcome model (what ``autoscale calibrate`` fits) at the *trace's* contexts: requests drawn
  with replacement from the trace's (network, co-running CPU and memory, both RSSIs), outcomes
  from the profile with the setting's noise (:class:`FittedAtTraceContexts`; ``--sim-contexts
  settings`` trains in the plain sim instead, whose co-running apps and signal come from
  ``settings.toml``'s phone schedule, not from the device: a profile fits no context process).
  Every environment, in training and evaluation, scores with the profile's ``E_ref``, so the
  learners optimise the reward they are judged by;
* a figure per trace: sim against measured latency and energy, one panel per target.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import autoscale_env  # noqa: F401  (registers AutoScale-v0)
from autoscale_env.world import config
from autoscale_env.world.files import atomic_write
from autoscale_env.world.errors import ConfigError
from autoscale_env.world.reward import reward
from autoscale_env.world.rules import oracle_actions
from autoscale_env.traces.format import Trace, load_trace
from autoscale_env.traces.recorder import link_model_version

__all__ = ["gap_report", "oracle_agreement", "qlearning_regret", "sim_outcomes",
           "target_errors"]

logger = logging.getLogger(__name__)


def sim_outcomes(profile: str, trace: Trace) -> tuple[np.ndarray, np.ndarray, Any]:
    """The profile's noise-free latency and energy at every request of ``trace``.

    This is the one place that asks the simulator for outcomes at given contexts (through the
    public ``SimBackend.expected``), so a different rules API needs only this function re-pointed.

    Returns:
        ``(latency_ms, energy_mj, sim)``: ``(n_requests, n_targets)`` arrays in the trace's target
        order, and the ``SimBackend``.
    """
    from autoscale_env.backends.sim import SimBackend

    sim = SimBackend(device=profile, scenario=trace.header.scenario,
                     setting=trace.header.setting)
    sim_names = [str(t) for t in sim.targets]
    missing = [t for t in trace.target_names if t not in sim_names]
    if missing:
        raise ConfigError(f"profile {profile} has no target(s) {', '.join(missing)} of "
                          f"{trace.path}; its targets: {', '.join(sim_names)}")
    cols = [sim_names.index(t) for t in trace.target_names]
    names = [w.name for w in trace.workloads]
    n, T = trace.n_requests, len(cols)
    latency, energy = np.empty((n, T)), np.empty((n, T))
    for i in range(n):
        b = sim.expected(names[int(trace.network[i])], co_cpu_pct=float(trace.co_cpu_pct[i]),
                         co_mem_pct=float(trace.co_mem_pct[i]),
                         rssi_wifi_dbm=float(trace.rssi_wifi_dbm[i]),
                         rssi_p2p_dbm=float(trace.rssi_p2p_dbm[i]))
        latency[i] = b.latency_ms[0][cols]
        energy[i] = b.energy_mj[0][cols]
    return latency, energy, sim


def _abs_log_ratio(sim: np.ndarray, measured: np.ndarray) -> np.ndarray:
    ok = (sim > 0) & (measured > 0) & np.isfinite(sim) & np.isfinite(measured)
    return np.abs(np.log(sim[ok] / measured[ok]))


def target_errors(trace: Trace, latency: np.ndarray, energy: np.ndarray) -> dict[str, dict]:
    """Per target: median and p90 of ``|log(sim/measured)|`` for latency and energy, and n."""
    out = {}
    for j, name in enumerate(trace.target_names):
        row: dict[str, float] = {}
        for key, sim, meas in (("latency", latency[:, j], trace.latency_ms[:, j]),
                               ("energy", energy[:, j], trace.energy_mj[:, j])):
            err = _abs_log_ratio(sim, meas)
            row[f"{key}_median_abs_log"] = float(np.median(err)) if len(err) else math.nan
            row[f"{key}_p90_abs_log"] = float(np.percentile(err, 90)) if len(err) else math.nan
        row["requests"] = int(trace.n_requests)
        out[name] = row
    return out


def oracle_agreement(trace: Trace, latency: np.ndarray, energy: np.ndarray,
                     reference_energy_mj: np.ndarray) -> dict[str, float]:
    """Agreement of the best target (sim vs trace) and the trace energy of the sim's choices."""
    scenario = config.get_scenario(trace.header.scenario)
    preset = config.get_reward_preset("energy")
    net = np.asarray(trace.network)
    target = np.array([w.accuracy["fp32"] - scenario.accuracy_tolerance
                       for w in trace.workloads])[net][:, None]
    ref = np.asarray(reference_energy_mj, dtype=float)[net][:, None]

    def rewards(lat, en):
        r, _, _ = reward(preset, latency_ms=lat, energy_mj=en, accuracy=trace.accuracy,
                         reference_energy_mj=ref, qos_ms=scenario.qos_ms,
                         accuracy_target=target)
        return r

    r_trace = rewards(trace.latency_ms, trace.energy_mj)
    real, sim = oracle_actions(r_trace), oracle_actions(rewards(latency, energy))
    rows = np.arange(trace.n_requests)
    e_real = float(trace.energy_mj[rows, real].sum())
    e_sim = float(trace.energy_mj[rows, sim].sum())
    # The oracle maximises the reward, not the energy: a sim choice that misses the trace's QoS
    # can spend less energy than the trace's oracle, never earn more reward.
    return {"agreement": float((real == sim).mean()),
            "oracle_energy_mj": e_real / trace.n_requests,
            "sim_oracle_energy_on_trace_mj": e_sim / trace.n_requests,
            "sim_oracle_regret": e_sim / e_real - 1.0,
            "oracle_reward": float(r_trace[rows, real].mean()),
            "sim_oracle_reward_on_trace": float(r_trace[rows, sim].mean())}


#: Where the sim-trained learner's requests come from (``--sim-contexts``).
SIM_CONTEXTS = ("trace", "settings")


class FittedAtTraceContexts:
    """The profile's world at a trace's contexts: a backend for training in the fitted world.

    Each request is a row of the trace drawn with replacement (its network, co-running CPU and
    memory, both RSSIs: the device's measured context distribution), its outcomes the profile's
    (:class:`~autoscale_env.world.rules.OutcomeModel`, the simulator's rules) with lognormal
    noise of the setting's sigmas (``settings.toml``, as :class:`SimBackend` draws them). Only
    the contexts come from the trace; no measured outcome is used.
    """

    deterministic = True
    energy_source = "model"

    def __init__(self, profile: str, trace: Trace, block_size: int = 256):
        from autoscale_env.backends.sim import SimBackend

        sim = SimBackend(device=profile, scenario=trace.header.scenario,
                         setting=trace.header.setting, workloads=tuple(trace.workloads))
        self.model = sim.model
        self.targets, self.workloads, self.scenario = sim.targets, sim.workloads, sim.scenario
        self.setting, self.device_name = sim.setting, sim.device_name
        self.reference_energy_mj = sim.reference_energy_mj
        self._accuracy = sim.accuracy_table
        self._sigma = np.asarray(sim.processes.noise_sigma, dtype=float)
        self._trace = trace
        # The trace's context columns as arrays, once: every block draws rows from them.
        self._network = np.asarray(trace.network)
        self._context = [np.asarray(x, dtype=float) for x in
                         (trace.co_cpu_pct, trace.co_mem_pct, trace.rssi_wifi_dbm, trace.rssi_p2p_dbm)]
        self._block = int(block_size)
        self._rng: np.random.Generator | None = None

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = np.random.default_rng(rng.integers(2**63))

    def next_block(self):
        from autoscale_env.world.types import RequestBlock

        if self._rng is None:
            raise RuntimeError("FittedAtTraceContexts.next_block() called before reset()")
        n = self._block
        rows = self._rng.integers(self._trace.n_requests, size=n)
        net = self._network[rows]
        ctx = [x[rows] for x in self._context]
        noise = np.exp(self._sigma * self._rng.standard_normal((n, len(self._sigma))))
        latency, energy = self.model.outcomes(net, *ctx, noise)
        return RequestBlock(network=net, co_cpu_pct=ctx[0], co_mem_pct=ctx[1],
                            rssi_wifi_dbm=ctx[2], rssi_p2p_dbm=ctx[3], latency_ms=latency,
                            energy_mj=energy, accuracy=self._accuracy[net],
                            energy_source=self.energy_source)

    def execute(self, block, index: int, action: int):
        raise NotImplementedError("blocks carry every target's outcome")

    def provenance(self) -> dict[str, str]:
        return {"model": "autoscale_env.world.rules.request_outcomes",
                "contexts": f"drawn from {self._trace.path}"}

    def close(self) -> None:
        """Nothing to release."""


def qlearning_regret(trace_path: str, profile: str, *, train_steps: int = 20_000,
                     seeds: Sequence[int] = (0, 1, 2), progress: bool = False,
                     contexts: str = "trace") -> dict[str, Any]:
    """Energy a Q-learner trained in the profile's sim loses on the trace (module docstring).

    ``contexts``: ``"trace"`` (the fitted world at the trace's contexts,
    :class:`FittedAtTraceContexts`) or ``"settings"`` (the plain sim's context schedule).
    """
    from agents.experiments.evaluation import evaluate
    from agents.qlearning import QLearningAgent
    from autoscale_env.backends.sim import SimBackend

    if contexts not in SIM_CONTEXTS:
        raise ConfigError(f"--sim-contexts {contexts!r}: valid choices are "
                          f"{', '.join(SIM_CONTEXTS)}")
    trace = load_trace(trace_path)
    h = trace.header
    names = trace.target_names
    cloud = next((t for t in names if t.startswith("cloud/")), "local/cpu/fp32")
    # One E_ref for every env: the profile's (what the sim trains with); the replay backend's own
    # for a device named like a bundled profile would be that bundled profile's, not this one's.
    e_ref = SimBackend(device=profile, scenario=h.scenario, setting=h.setting,
                       workloads=tuple(trace.workloads)).reference_energy_mj
    present = sorted({int(k) for k in np.asarray(trace.network)})
    replay_ref = {trace.workloads[k].name: float(e_ref[k]) for k in present}
    rows = []
    for seed in seeds:
        if contexts == "trace":
            sim_env = gym.make("AutoScale-v0", backend=FittedAtTraceContexts(profile, trace))
        else:
            sim_env = gym.make("AutoScale-v0", backend="sim", device=profile,
                               scenario=h.scenario, setting=h.setting)
        if [str(t) for t in sim_env.unwrapped.targets] != names:
            raise ConfigError(f"profile {profile}'s targets "
                              f"{[str(t) for t in sim_env.unwrapped.targets]} are not the trace's "
                              f"{names} (in order)")
        real_env = gym.make("AutoScale-v0", backend="replay", trace=trace_path,
                            backend_options={"order": "shuffle",
                                             "reference_energy_mj": replay_ref})
        sim_agent = QLearningAgent(sim_env, seed=seed).learn(train_steps, progress_bar=progress)
        real_agent = QLearningAgent(real_env, seed=seed).learn(train_steps, progress_bar=progress)
        result = {"seed": int(seed)}
        for label, agent in (("sim_trained", sim_agent), ("trace_trained", real_agent)):
            eval_env = gym.make("AutoScale-v0", backend="replay", trace=trace_path,
                                backend_options={"reference_energy_mj": replay_ref})
            m = evaluate(agent, eval_env, trace.n_requests, seed=0,
                         cloud_target=cloud).metrics()
            result[label] = {k: m[k] for k in ("energy_mj", "qos_violation_rate",
                                                "oracle_match", "energy_gap_to_oracle")}
            eval_env.close()
        sim_env.close()
        real_env.close()
        result["sim_state_coverage"] = _state_coverage(
            sim_agent, profile, trace_path, h, train_steps, seed,
            FittedAtTraceContexts(profile, trace) if contexts == "trace" else None)
        e_sim, e_real = result["sim_trained"]["energy_mj"], result["trace_trained"]["energy_mj"]
        result["regret_mj"] = e_sim - e_real
        result["regret"] = e_sim / e_real - 1.0
        rows.append(result)
    mean = {k: float(np.mean([r[k] for r in rows]))
            for k in ("regret_mj", "regret", "sim_state_coverage")}
    for label in ("sim_trained", "trace_trained"):
        mean[label] = {k: float(np.mean([r[label][k] for r in rows]))
                       for k in rows[0][label]}
    return {"train_steps": int(train_steps), "seeds": [int(s) for s in seeds], "mean": mean,
            "per_seed": rows, "sim_contexts": contexts}


#: A state the sim showed at least this often in training counts as covered.
COVERED_VISITS = 20


def _state_coverage(agent, profile: str, trace_path: str, header, steps: int, seed: int,
                    backend=None) -> float:
    """Share of the trace's requests whose observed state the sim showed at least
    :data:`COVERED_VISITS` times in ``steps`` requests from ``reset(seed=seed)`` (the sim world
    does not react to actions, so this replays what the sim-trained learner saw; ``backend``:
    the training world when it is not the plain sim)."""
    from collections import Counter

    if backend is not None:
        sim_env = gym.make("AutoScale-v0", backend=backend)
    else:
        sim_env = gym.make("AutoScale-v0", backend="sim", device=profile,
                           scenario=header.scenario, setting=header.setting)
    seen: Counter = Counter()
    obs, _ = sim_env.reset(seed=seed)
    for _ in range(steps):
        seen[agent.state_index(obs)] += 1
        obs, _, terminated, truncated, _ = sim_env.step(0)
        if terminated or truncated:
            obs, _ = sim_env.reset()
    sim_env.close()
    real_env = gym.make("AutoScale-v0", backend="replay", trace=trace_path)
    obs, _ = real_env.reset(seed=0)
    n = real_env.unwrapped.backend.trace.n_requests
    covered = 0
    for _ in range(n):
        covered += seen[agent.state_index(obs)] >= COVERED_VISITS
        obs, _, terminated, truncated, _ = real_env.step(0)
        if terminated or truncated:
            obs, _ = real_env.reset()
    real_env.close()
    return covered / n


def scatter_figure(trace: Trace, latency: np.ndarray, energy: np.ndarray, path: Path,
                   title: str) -> Path | None:
    """Sim (y) against measured (x), latency and energy, one column per target (log-log)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        logger.warning("matplotlib is not installed: no figure; pip install 'autoscale-env[plots]'")
        return None
    T = len(trace.target_names)
    fig, axes = plt.subplots(2, T, figsize=(3.2 * T, 6.2), squeeze=False)
    for j, name in enumerate(trace.target_names):
        for row, (label, sim, meas) in enumerate((("latency ms", latency[:, j],
                                                   trace.latency_ms[:, j]),
                                                  ("energy mJ", energy[:, j],
                                                   trace.energy_mj[:, j]))):
            ax = axes[row][j]
            ok = (sim > 0) & (meas > 0)
            ax.scatter(meas[ok], sim[ok], s=6, alpha=0.5)
            if ok.any():
                lo = min(meas[ok].min(), sim[ok].min())
                hi = max(meas[ok].max(), sim[ok].max())
                ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):  # minor labels overlap on narrow decades
                axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(f"measured {label}")
            ax.set_ylabel(f"sim {label}")
            if row == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


def gap_report(traces: Sequence[str], profile: str, *, out: str | os.PathLike | None = None,
               train_steps: int = 20_000, seeds: Sequence[int] = (0, 1, 2),
               figure: bool = True, progress: bool = False,
               sim_contexts: str = "trace") -> dict[str, Any]:
    """Everything of the module docstring, per trace; writes ``gap.json`` and figures to ``out``."""
    if isinstance(train_steps, bool) or int(train_steps) != train_steps or train_steps < 0:
        raise ConfigError(f"--train-steps must be an integer >= 0, got {train_steps!r}")
    seeds = list(seeds)
    if train_steps and not seeds:
        raise ConfigError("--seeds must be >= 1: the Q-learner's regret is a mean over seeds "
                          "(pass --train-steps 0 to skip it instead)")
    config.load_device(profile)  # a bad profile fails before any work
    report: dict[str, Any] = {"profile": str(profile), "traces": {}}
    out_dir = Path(out) if out is not None else None
    for name in traces:
        trace = load_trace(name)
        if not trace.complete:
            raise ConfigError(f"{trace.path}: the gap needs a full trace (every target's outcome "
                              f"of every request)")
        latency, energy, sim = sim_outcomes(str(profile), trace)
        label = Path(trace.path).name.split(".")[0]
        entry: dict[str, Any] = {
            "trace": str(name), "requests": trace.n_requests, "setting": trace.header.setting,
            "targets": target_errors(trace, latency, energy),
            "oracle": oracle_agreement(trace, latency, energy, sim.reference_energy_mj),
            "conditions": trace.header.conditions,
            "link_model_current": _link_model_current(trace.header.conditions),
        }
        if train_steps > 0:
            entry["qlearning"] = qlearning_regret(name, str(profile), train_steps=train_steps,
                                                  seeds=seeds, progress=progress,
                                                  contexts=sim_contexts)
        if figure and out_dir is not None:
            fig = scatter_figure(trace, latency, energy, out_dir / f"scatter-{label}.png",
                                 f"{label}: sim ({Path(str(profile)).name}) vs measured")
            entry["figure"] = str(fig) if fig else None
        report["traces"][label] = entry
    if out_dir is not None:
        atomic_write(out_dir / "gap.json", json.dumps(report, indent=1) + "\n")
    return report


def _link_model_current(conditions: dict[str, Any] | None) -> bool | None:
    """Whether the trace was recorded under today's ``links.toml`` (None: not recorded). A live
    trace recorded under another link model cannot match the sim's remote targets."""
    recorded = (conditions or {}).get("link_model")
    return None if recorded is None else recorded == link_model_version()


def conditions_text(conditions: dict[str, Any] | None, link_current: bool | None) -> str:
    """One line on how the trace was recorded: load average, foreign CPU, link model."""
    if not conditions:
        return "recording conditions: not in the trace's header (recorded before they were kept)"
    def loads(key: str) -> str:
        v = conditions.get(key)
        return "/".join(f"{x:g}" for x in v) if v else "unknown"
    foreign = conditions.get("foreign_cpu") or {}
    share = foreign.get("mean")
    link = {True: "the current links.toml", False: "ANOTHER links.toml than today's (remote "
            "targets cannot match)", None: "unknown"}[link_current]
    return (f"recording conditions: load average {loads('load_average_before')} before, "
            f"{loads('load_average_after')} after (1/5/15 min) on {conditions.get('cpus_used')} "
            f"CPU(s); foreign CPU "
            + (f"{share * 100:.1f} % (mean), {foreign.get('max_interval', 0) * 100:.1f} % "
               f"(busiest interval)" if share is not None else "unknown")
            + f"; link model: {link}")


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables of a :func:`gap_report`."""
    lines = [f"profile: {report['profile']}"]
    for label, e in report["traces"].items():
        lines += ["", f"### {label} ({e['requests']} requests, {e['setting']})", ""]
        if "conditions" in e:
            lines += [conditions_text(e["conditions"], e.get("link_model_current")), ""]
        lines += ["| target | latency median abs log | latency p90 | energy median abs log | "
                  "energy p90 |", "|---|---|---|---|---|"]
        for t, r in e["targets"].items():
            lines.append(f"| {t} | {r['latency_median_abs_log']:.3f} | "
                         f"{r['latency_p90_abs_log']:.3f} | {r['energy_median_abs_log']:.3f} | "
                         f"{r['energy_p90_abs_log']:.3f} |")
        o = e["oracle"]
        lines += ["", f"oracle agreement (sim vs trace): {o['agreement']:.3f}; the sim oracle's "
                      f"choices cost {o['sim_oracle_energy_on_trace_mj']:.1f} mJ/request on the "
                      f"trace vs {o['oracle_energy_mj']:.1f} for the trace's oracle "
                      f"(+{o['sim_oracle_regret'] * 100:.1f} %)"]
        if "qlearning" in e:
            q = e["qlearning"]["mean"]
            s, r = q["sim_trained"], q["trace_trained"]
            lines += [
                f"Q-learner, {e['qlearning']['train_steps']} training steps, mean of seeds "
                f"{e['qlearning']['seeds']}, evaluated on the trace; the fitted sim "
                + ("at the trace's contexts" if e["qlearning"].get("sim_contexts", "trace")
                   == "trace" else "with settings.toml's contexts") + ":",
                "",
                "| trained on | energy mJ/request | QoS violations | oracle match | gap to oracle |",
                "|---|---|---|---|---|",
                f"| fitted sim | {s['energy_mj']:.1f} | {s['qos_violation_rate']:.3f} | "
                f"{s['oracle_match']:.3f} | {s['energy_gap_to_oracle'] * 100:+.1f} % |",
                f"| the trace (in-sample) | {r['energy_mj']:.1f} | {r['qos_violation_rate']:.3f} | "
                f"{r['oracle_match']:.3f} | {r['energy_gap_to_oracle'] * 100:+.1f} % |",
                "",
                f"sim-to-real regret: {q['regret_mj']:+.1f} mJ/request ({q['regret'] * 100:+.1f} %); "
                f"{q['sim_state_coverage'] * 100:.0f} % of the trace's requests are in states the "
                f"sim showed >= {COVERED_VISITS} times in training",
            ]
    return "\n".join(lines)
