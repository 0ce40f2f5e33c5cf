"""``autoscale fleet-benchmark``: how the baselines fare as the fleet grows.

For each fleet size N, on the same worlds (same seed): every phone forced to the edge, the
per-phone oracle (best target alone, ignoring the others), the independent Q-learners (trained
first), best-response dynamics (selfish phones that know what the others do: a Nash equilibrium
of each round), optionally the shared-parameter PPO, and the centralised optimum (exhaustive for
small N; coordinate ascent on the summed reward above, a lower bound on the optimum). Reported:
energy per request, QoS violations, reward, where requests ran, the edge latency, and the price
of anarchy = cost(policy) / cost(centralised), cost = -mean reward.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from agents.fleet import (CentralisedOracle, CoordinateAscent, IndependentQLearners, RunStats,
                          fixed_target, per_phone_oracle, run_policy)
from autoscale_env.fleet import make_core
from autoscale_env.world.files import atomic_write, load_json

SIZES = (1, 2, 4, 8, 16, 64)
#: Above this many phones the centralised optimum is approximated by coordinate ascent.
EXHAUSTIVE_MAX_PHONES = 4
#: The PoA is reported against the centralised policy for these policies.
SELFISH = ("per_phone_oracle", "independent_q", "best_response", "shared_ppo")


def run(sizes=SIZES, rounds: int = 200, train_rounds: int = 20_000, ppo_timesteps: int = 0,
        seed: int = 0, mix: str = "benchmark", load_signal: bool = False,
        edge_target: str = "edge/gpu/fp32", sharing: str | None = None,
        edge_rounds: int = 1000, progress: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns the results (see :func:`write` for the files).

    ``edge_rounds``: rounds of the cheap all-edge run (more than ``rounds``: a few phones in a
    weak-signal spell dominate a short run's mean)."""
    results: dict[str, Any] = {"config": {
        "sizes": list(sizes), "rounds": rounds, "train_rounds": train_rounds,
        "ppo_timesteps": ppo_timesteps, "seed": seed, "mix": mix, "load_signal": load_signal,
        "edge_target": edge_target, "sharing": sharing, "edge_rounds": edge_rounds,
        "exhaustive_max_phones": EXHAUSTIVE_MAX_PHONES}, "sizes": {}}
    eval_seed, train_seed = seed, seed + 1
    bar = tqdm(sizes, desc="fleet sizes", disable=not progress)
    for n in bar:
        t0 = time.perf_counter()
        core = make_core(n, mix=mix, load_signal=load_signal, sharing=sharing)
        rows: dict[str, RunStats] = {}
        rows["all_edge"] = run_policy(core, fixed_target(edge_target), edge_rounds, eval_seed,
                                      "all_edge")
        rows["per_phone_oracle"] = run_policy(core, per_phone_oracle, rounds, eval_seed,
                                              "per_phone_oracle")
        learners = IndependentQLearners(core, seed=seed).learn(train_rounds, seed=train_seed)
        rows["independent_q"] = run_policy(core, learners.policy, rounds, eval_seed, "independent_q")
        br = CoordinateAscent("selfish")
        rows["best_response"] = run_policy(core, br, rounds, eval_seed, "best_response")
        if ppo_timesteps > 0:
            from agents.fleet_ppo import ppo_policy, train_shared_ppo
            from autoscale_env.fleet import parallel_env
            env = parallel_env(n, mix=mix, load_signal=load_signal, sharing=sharing)
            model = train_shared_ppo(env, ppo_timesteps, seed=train_seed)
            rows["shared_ppo"] = run_policy(core, ppo_policy(model), rounds, eval_seed, "shared_ppo")
        exhaustive = n <= EXHAUSTIVE_MAX_PHONES
        central = CentralisedOracle(core) if exhaustive else CoordinateAscent("social")
        rows["centralised"] = run_policy(core, central, rounds, eval_seed, "centralised")
        cost_central = -rows["centralised"].reward
        poa = {k: (-rows[k].reward) / cost_central for k in SELFISH if k in rows}
        results["sizes"][str(n)] = {
            "policies": {k: v.as_dict() for k, v in rows.items()},
            "price_of_anarchy": poa,
            "centralised_exact": exhaustive,
            "best_response_converged": br.converged / max(br.rounds, 1),
            "wall_s": time.perf_counter() - t0,
        }
        core.close()
    return results


def table(results: dict[str, Any]) -> str:
    """Markdown tables of the results."""
    sizes = results["sizes"]
    out = ["Every phone forced to the edge (`" + results["config"]["edge_target"] + "`):", "",
           "| N | mean edge latency (ms) | same requests alone (ms) | extra upload (ms) | "
           "edge queue wait (ms) | QoS violations |",
           "|---:|---:|---:|---:|---:|---:|"]
    for n, r in sizes.items():
        e = r["policies"]["all_edge"]
        out.append(f"| {n} | {e['edge_latency_ms']:.1f} | {e['edge_alone_latency_ms']:.1f} | "
                   f"{e['upload_extra_ms']:.1f} | {e['edge_wait_ms']:.1f} | "
                   f"{100 * e['qos_violation']:.1f} % |")
    out += ["", "Energy per request (mJ) / QoS violations / price of anarchy (cost / centralised cost):",
            "", "| N | policy | energy (mJ) | QoS viol. | reward | local | edge | cloud | PoA |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in sizes.items():
        for k, p in r["policies"].items():
            if k == "all_edge":
                continue
            poa = r["price_of_anarchy"].get(k)
            bound = "" if r["centralised_exact"] else " (>=)"
            name = k if k != "centralised" or r["centralised_exact"] else "centralised (coord. ascent)"
            share = p["location_share"]
            out.append(
                f"| {n} | {name} | {p['energy_mj']:.1f} | {100 * p['qos_violation']:.1f} % | "
                f"{p['reward']:.2f} | {100 * share['local']:.0f} % | {100 * share['edge']:.0f} % | "
                f"{100 * share['cloud']:.0f} % | "
                f"{'' if poa is None else f'{poa:.3f}{bound}'} |")
    out += ["", "Independent Q-learners: share of requests per target (entropy: how evenly they "
            "spread, in bits):", ""]
    targets = sorted({t for r in sizes.values()
                      for t in r["policies"]["independent_q"]["target_share"]})
    out += ["| N | " + " | ".join(targets) + " | entropy |", "|---:|" + "---:|" * (len(targets) + 1)]
    for n, r in sizes.items():
        share = r["policies"]["independent_q"]["target_share"]
        entropy = -sum(p * math.log2(p) for p in share.values() if p > 0)
        out.append(f"| {n} | " + " | ".join(f"{100 * share.get(t, 0):.0f} %" for t in targets)
                   + f" | {entropy:.2f} |")
    return "\n".join(out) + "\n"


def figure(results: dict[str, Any], path: str | os.PathLike) -> None:
    """Energy per request, QoS violations and price of anarchy against N (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(n) for n in results["sizes"]]
    runs = list(results["sizes"].values())
    policies = [k for k in runs[0]["policies"]]
    color = {k: f"C{i}" for i, k in enumerate(policies)}  # one colour per policy in every panel
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for k in policies:
        axes[0].plot(sizes, [r["policies"][k]["energy_mj"] for r in runs], marker="o", label=k,
                     color=color[k])
        axes[1].plot(sizes, [100 * r["policies"][k]["qos_violation"] for r in runs], marker="o",
                     label=k, color=color[k])
    for k in SELFISH:
        ys = [r["price_of_anarchy"].get(k, math.nan) for r in runs]
        if not all(math.isnan(y) for y in ys):
            axes[2].plot(sizes, ys, marker="o", label=k, color=color[k])
    for ax, title in zip(axes, ("phone energy per request (mJ)", "QoS violations (%)",
                                "price of anarchy (cost / centralised)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("phones N")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[2].axvline(EXHAUSTIVE_MAX_PHONES, color="grey", ls=":", lw=1)
    axes[2].text(EXHAUSTIVE_MAX_PHONES * 1.1, axes[2].get_ylim()[1], "coord. ascent ->",
                 va="top", fontsize=8, color="grey")
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"AutoScale fleet, mix '{results['config']['mix']}', "
                 f"{results['config']['rounds']} rounds, seed {results['config']['seed']}")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    plt.close(fig)


def write(results: dict[str, Any], out_dir: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write ``results.json`` and ``table.md`` into ``out_dir`` (refuses to overwrite unless
    ``force``); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "table.md"]
    if not force and any(p.exists() for p in paths):
        raise FileExistsError(f"{out} already holds fleet-benchmark results; pass --force to replace")
    atomic_write(paths[0], json.dumps(results, indent=1))
    atomic_write(paths[1], table(results))
    return paths


def render(directory: str | os.PathLike, figure_path: str | os.PathLike | None = None) -> str:
    """The tables of an earlier run's ``results.json`` (and its figure, if ``figure_path``)."""
    from autoscale_env.world.errors import ConfigError
    try:
        results = load_json(Path(directory) / "results.json", ValueError,
                            what="fleet-benchmark results")
        text = table(results)
        if figure_path:
            figure(results, figure_path)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot render {directory}: {e}") from None
    return text
