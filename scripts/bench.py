"""The project's own benchmark: how fast the env, the vector env and the Q-learner are, here.

Everything is measured in this one process, one after another, and printed as a table;
``--json FILE`` also writes the figures. Not a timed test: run it on the machine you report.

    python scripts/bench.py --quick --json out.json     # under a minute
    python scripts/bench.py                             # longer runs, steadier medians

Figures (medians over interleaved rounds):

* ``env_steps_per_s``: ``gym.make("AutoScale-v0")`` (sim backend), random actions, resets included.
* ``cartpole_steps_per_s``: ``gym.make("CartPole-v1")`` in the identical loop, same run.
* ``raw_env_steps_per_s``: AutoScale's ``env.unwrapped`` in the same loop (no TimeLimit, so no
  resets: requests just keep coming).
* ``vector_steps_per_s``: env-steps per second of the native vector env
  (``gym.make_vec(..., vectorization_mode="vector_entry_point")``), 1024 sub-envs, over whole
  episode cycles (100 steps and the autoreset step, where each sub-env's next block is made).
* ``cartpole_vector_steps_per_s``: Gymnasium's own native vector CartPole
  (``gym.make_vec("CartPole-v1", num_envs=1024, vectorization_mode="vector_entry_point")``) in the
  same loop, rounds interleaved with AutoScale's; ``vector_vs_cartpole_vector`` is the ratio.
* ``sim_requests_per_s``: the sim's raw throughput, requests with every target's outcome per
  second (``SimBackend.next_block()`` of blocks of 1024 requests, one world);
  ``sim_batched_requests_per_s``: the same when 64 worlds' blocks of 101 are computed in one
  call (``SimBackend.generate``, as the vector env and the fleet do; numba's thread count).
* ``fleet_phone_steps_per_s``: phone-steps per second of the fleet (``autoscale_env.fleet``'s array
  core, 256 phones sharing one edge and one access point, random actions, new blocks included).
* ``startup_{env,vector}_{cold,warm}_s``: a fresh process's ``import autoscale_env`` plus
  ``gym.make`` / ``reset`` / first ``step`` of the single env, then the same for a 1024-sub-env
  vector env, with an empty numba cache (cold: ``NUMBA_CACHE_DIR`` set to a new temporary folder,
  so every kernel compiles) and again with that cache populated (warm).
* ``grid_wall_s`` (``--grid`` only): the paper grid, 3 phones x 3 scenarios x 2 settings x 5 seeds,
  Q-learner (64,000 training requests) + oracle + mobile-CPU and cloud baselines, 5,000
  evaluation requests, as ``autoscale sweep ... --workers 2`` in a fresh process with TensorBoard
  logs written (:data:`GRID_COMMAND`).
* ``qlearner_act_ns`` / ``qlearner_update_ns``: ``QLearningAgent.predict(obs)`` per decision and
  ``update(s, a, r, s_next)`` per update (median over batches of 1000 calls, loop included).
* ``qtable_bytes``: ``QLearningAgent.nbytes``.
* ``benchmark_wall_s``: the README's main job, ``autoscale benchmark --out DIR --force``, as a
  fresh process, end to end.

The loop is the same for AutoScale and CartPole: actions pre-drawn from the same generator as
Python ints, ``reset()`` on ``terminated or truncated``. Rounds alternate the envs, so slow phases
of a noisy machine hit both; the AutoScale/CartPole ratio is the figure to compare across machines.
Parts that need code that is not there (``agents.qlearning``, the ``autoscale`` CLI) print ``n/a``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import autoscale_env  # registers AutoScale-v0

FIGURES = ("env_steps_per_s", "cartpole_steps_per_s", "raw_env_steps_per_s", "vector_steps_per_s",
           "cartpole_vector_steps_per_s", "sim_requests_per_s", "sim_batched_requests_per_s",
           "fleet_phone_steps_per_s", "qlearner_act_ns", "qlearner_update_ns", "qtable_bytes",
           "benchmark_wall_s", "startup_env_cold_s", "startup_env_warm_s",
           "startup_vector_cold_s", "startup_vector_warm_s", "grid_wall_s")

#: Must-show thresholds of issues #8, #16 and #25 (checked and printed, never used to change a
#: measurement).
TARGETS = {
    "env_vs_cartpole": (">=", 1.5),
    "vector_vs_cartpole_vector": (">=", 0.5),
    "vector_steps_per_s": (">=", 1e6),
    "fleet_phone_steps_per_s": (">=", 2e6),
    "qlearner_act_ns": ("<=", 1000),
    "qtable_bytes": ("<=", 40960),
    "grid_wall_s": ("<=", 30.0),
}

#: The paper grid of ``--grid`` (``{out}``: a temporary folder).
GRID_COMMAND = ("autoscale sweep --agents qlearning,oracle,fixed:local/cpu/fp32,fixed:cloud/gpu/fp32 "
                "--device mi8pro,galaxy_s10e,moto_x_force "
                "--scenario non_streaming,streaming,translation --setting static,dynamic "
                "--seeds 5 --train-steps 64000 --eval-steps 5000 --workers 2 "
                "--out {out} --force --quiet --no-figures")


# ---------------------------------------------------------------------------------------------
# Measurements


def env_loop(env: gym.Env, actions: list[int], seed: int) -> float:
    """Steps per second of ``env`` over ``actions``, resetting on termination or truncation."""
    step, reset = env.step, env.reset
    reset(seed=seed)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = step(a)
        if terminated or truncated:
            reset()
    return len(actions) / (time.perf_counter() - start)


def actions_for(env: gym.Env, n: int, seed: int) -> list[int]:
    """``n`` random actions of ``env``, pre-drawn (``action_space.sample()`` costs 1-2 us)."""
    return np.random.default_rng(seed).integers(env.action_space.n, size=n).tolist()


def measure_envs(steps: int, rounds: int, seed: int = 0) -> dict[str, Any]:
    """AutoScale (wrapped and unwrapped) and CartPole, interleaved round by round."""
    envs = {
        "cartpole": gym.make("CartPole-v1"),
        "env": gym.make("AutoScale-v0"),
    }
    envs["raw_env"] = envs["env"].unwrapped
    actions = {name: actions_for(env, steps, seed) for name, env in envs.items()}
    for name, env in envs.items():  # warm-up: first resets, caches, the passive checker
        env_loop(env, actions[name][: min(steps, 5000)], seed)
    samples: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(rounds):
        for name, env in envs.items():
            samples[name].append(env_loop(env, actions[name], seed))
    ratios = [e / c for e, c in zip(samples["env"], samples["cartpole"])]
    return {
        "env_steps_per_s": statistics.median(samples["env"]),
        "cartpole_steps_per_s": statistics.median(samples["cartpole"]),
        "raw_env_steps_per_s": statistics.median(samples["raw_env"]),
        "env_vs_cartpole_per_round": statistics.median(ratios),
        "samples": samples,
    }


def vector_loop(env, actions: np.ndarray, seed: int) -> float:
    """Env-steps per second of vector ``env`` over ``actions`` (one row per step)."""
    env.reset(seed=seed)
    step = env.step
    start = time.perf_counter()
    for a in actions:
        step(a)
    return actions.size / (time.perf_counter() - start)


def measure_vector(num_envs: int, vector_steps: int, rounds: int, seed: int = 0) -> dict[str, Any]:
    """Env-steps per second of the native vector env and of Gymnasium's native vector CartPole
    (autoresets included), rounds interleaved."""
    envs = {
        "vector": gym.make_vec("AutoScale-v0", num_envs=num_envs,
                               vectorization_mode="vector_entry_point"),
        "cartpole_vector": gym.make_vec("CartPole-v1", num_envs=num_envs,
                                        vectorization_mode="vector_entry_point"),
    }
    actions = {name: np.random.default_rng(seed).integers(
        env.single_action_space.n, size=(vector_steps, num_envs)) for name, env in envs.items()}
    for name, env in envs.items():  # warm-up
        vector_loop(env, actions[name][: min(vector_steps, 50)], seed)
    samples: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(rounds):
        for name, env in envs.items():
            samples[name].append(vector_loop(env, actions[name], seed))
    for env in envs.values():
        env.close()
    ratios = [a / c for a, c in zip(samples["vector"], samples["cartpole_vector"])]
    return {"vector_steps_per_s": statistics.median(samples["vector"]),
            "cartpole_vector_steps_per_s": statistics.median(samples["cartpole_vector"]),
            "vector_vs_cartpole_vector_per_round": statistics.median(ratios),
            "samples": samples, "num_envs": num_envs}


def measure_sim(rounds: int, requests: int = 200_000) -> dict[str, Any]:
    """Requests with every target's outcome per second: one world, and 64 worlds per call."""
    from autoscale_env.backends.sim import SimBackend, SimState

    sim = SimBackend("mi8pro", "non_streaming", "dynamic", block_size=1024)
    sim.reset(np.random.default_rng(0))
    batched = SimBackend("mi8pro", "non_streaming", "dynamic")
    E, B = 64, batched.block_size
    state = SimState(E)
    rngs = [np.random.default_rng(k) for k in range(E)]
    worlds = np.arange(E)

    def one() -> float:
        n = 0
        start = time.perf_counter()
        while n < requests:
            n += len(sim.next_block())
        return n / (time.perf_counter() - start)

    def many() -> float:
        n = 0
        start = time.perf_counter()
        while n < requests:
            batched.reset_worlds(rngs, state, worlds)
            batched.generate(state, worlds)
            n += E * B
        return n / (time.perf_counter() - start)

    one(), many()  # warm-up
    samples: dict[str, list[float]] = {"sim": [], "sim_batched": []}
    for _ in range(rounds):
        samples["sim"].append(one())
        samples["sim_batched"].append(many())
    return {"sim_requests_per_s": statistics.median(samples["sim"]),
            "sim_batched_requests_per_s": statistics.median(samples["sim_batched"]),
            "samples": samples}


def measure_fleet(num_phones: int, fleet_steps: int, rounds: int, seed: int = 0) -> dict[str, Any]:
    """Phone-steps per second of the fleet's array core (contention included)."""
    from autoscale_env.fleet import make_core
    core = make_core(num_phones)
    actions = np.random.default_rng(seed).integers(9, size=(fleet_steps, num_phones))
    samples = []
    for _ in range(rounds):
        core.reset(seed)
        step = core.step
        start = time.perf_counter()
        for a in actions:
            step(a)
        samples.append(fleet_steps * num_phones / (time.perf_counter() - start))
    core.close()
    return {"fleet_phone_steps_per_s": statistics.median(samples), "samples": samples,
            "num_phones": num_phones}


def measure_qlearner(batches: int, batch: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per-decision and per-update cost of the Q-learner; ``n/a`` parts when it is missing."""
    out: dict[str, Any] = {"qlearner_act_ns": None, "qlearner_update_ns": None,
                           "qtable_bytes": None, "notes": []}
    try:
        from agents.qlearning import QLearningAgent
    except ImportError as e:
        out["notes"].append(f"agents.qlearning not importable ({e})")
        return out
    env = gym.make("AutoScale-v0")
    agent = QLearningAgent(env, seed=seed)
    n = batch * batches
    obs, _ = env.reset(seed=seed)
    observations, rewards = [], []
    actions = np.random.default_rng(seed).integers(env.action_space.n, size=n).tolist()
    for a in actions:  # real observations (fresh arrays), as the agent sees them
        observations.append(obs)
        obs, r, terminated, truncated, _ = env.step(a)
        rewards.append(r)
        if terminated or truncated:
            obs, _ = env.reset()
    nbytes = getattr(agent, "nbytes", None)
    out["qtable_bytes"] = int(nbytes) if nbytes is not None else None
    if out["qtable_bytes"] is None:
        out["notes"].append("QLearningAgent has no nbytes")

    predict = getattr(agent, "predict", None)
    if predict is None:
        out["notes"].append("QLearningAgent has no predict")
    else:
        predict(observations[0])  # warm-up
        per_batch = []
        for k in range(batches):
            chunk = observations[k * batch:(k + 1) * batch]
            start = time.perf_counter_ns()
            for o in chunk:
                predict(o)
            per_batch.append((time.perf_counter_ns() - start) / len(chunk))
        out["qlearner_act_ns"] = statistics.median(per_batch)

    update = getattr(agent, "update", None)
    index = getattr(agent, "state_index", None)
    if update is None or index is None:
        out["notes"].append("QLearningAgent has no update(s, a, r, s_next) / state_index")
    else:
        states = [index(o) for o in observations]
        transitions = list(zip(states[:-1], actions[:-1], rewards[:-1], states[1:]))
        per_batch = []
        for k in range(batches):
            chunk = transitions[k * batch:(k + 1) * batch]
            start = time.perf_counter_ns()
            for s, a, r, s2 in chunk:
                update(s, a, r, s2)
            per_batch.append((time.perf_counter_ns() - start) / max(1, len(chunk)))
        out["qlearner_update_ns"] = statistics.median(per_batch)
    env.close()
    return out


def measure_main_job(timeout_s: float) -> dict[str, Any]:
    """Wall time of the README's main job as a fresh process (imports included)."""
    with tempfile.TemporaryDirectory(prefix="autoscale-bench-") as tmp:
        out_dir = os.path.join(tmp, "benchmark")
        code = ("import sys; from agents.cli import main; "
                f"raise SystemExit(main(['benchmark', '--out', {out_dir!r}, '--force']))")
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                  text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"benchmark_wall_s": None, "notes": [f"main job over {timeout_s:.0f} s"]}
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"benchmark_wall_s": None,
                "notes": [f"main job failed (exit {proc.returncode}): {tail[0]}"]}
    return {"benchmark_wall_s": wall, "notes": []}


_STARTUP = """
import time
t0 = time.perf_counter()
import gymnasium as gym
import numpy as np
import autoscale_env
env = gym.make("AutoScale-v0")
env.reset(seed=0)
env.step(0)
t1 = time.perf_counter()
vec = gym.make_vec("AutoScale-v0", num_envs=1024, vectorization_mode="vector_entry_point")
vec.reset(seed=0)
vec.step(np.zeros(1024, dtype=np.int64))
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def measure_startup(timeout_s: float = 600) -> dict[str, Any]:
    """Import + first step, single env and vector env, in fresh processes: with an empty numba
    cache (a new ``NUMBA_CACHE_DIR``: every kernel compiles), then with it populated."""
    out: dict[str, Any] = {"notes": []}
    with tempfile.TemporaryDirectory(prefix="autoscale-numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        for kind in ("cold", "warm"):
            proc = subprocess.run([sys.executable, "-c", _STARTUP], env=env, cwd=ROOT,
                                  capture_output=True, text=True, timeout=timeout_s, check=False)
            if proc.returncode != 0:
                out["notes"].append(f"start-up ({kind}) failed: "
                                    f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            t_env, t_vec = (float(x) for x in proc.stdout.split())
            out[f"startup_env_{kind}_s"], out[f"startup_vector_{kind}_s"] = t_env, t_vec
    return out


def measure_grid(timeout_s: float = 3600) -> dict[str, Any]:
    """Wall time of :data:`GRID_COMMAND` as a fresh process (imports and TensorBoard included)."""
    with tempfile.TemporaryDirectory(prefix="autoscale-grid-") as tmp:
        command = GRID_COMMAND.format(out=os.path.join(tmp, "grid")).split()
        code = ("import sys; from agents.cli import main; "
                f"raise SystemExit(main({command[1:]!r}))")
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                  text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"grid_wall_s": None, "notes": [f"grid over {timeout_s:.0f} s"]}
        wall = time.perf_counter() - start
        tb = list(Path(tmp, "grid", "tb").glob("*"))
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"grid_wall_s": None, "notes": [f"grid failed (exit {proc.returncode}): {tail[0]}"]}
    return {"grid_wall_s": wall, "notes": [f"grid wrote {len(tb)} TensorBoard runs"]}


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import numba
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": cores, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__,
            "numba_threads": numba.get_num_threads(), "load_average": load,
            "gymnasium": gym.__version__,
            "autoscale_env": autoscale_env.__version__, "platform": platform.platform()}


def fmt(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("steps/s", "req/s"):
        return f"{value:,.0f}"
    if unit == "ns":
        return f"{value:,.0f}"
    if unit == "bytes":
        return f"{value:,d}"
    if unit == "s":
        return f"{value:.1f}"
    return f"{value:.2f}"


def check(value: float | None, op: str, limit: float) -> str:
    if value is None:
        return "n/a"
    ok = value >= limit if op == ">=" else value <= limit
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter runs (under a minute)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--num-envs", type=int, default=1024, help="vector env sub-envs")
    p.add_argument("--skip-main-job", action="store_true", help="leave benchmark_wall_s n/a")
    p.add_argument("--skip-startup", action="store_true", help="leave the start-up times n/a")
    p.add_argument("--grid", action="store_true",
                   help="also time the paper grid (GRID_COMMAND: minutes on a slow machine)")
    args = p.parse_args(argv)

    steps, rounds = (100_000, 5) if args.quick else (300_000, 9)
    # whole episode cycles (100 steps + the autoreset step), so that block generation is
    # counted at its steady-state share
    cycle = (autoscale_env.MAX_EPISODE_STEPS or 100) + 1
    vector_steps = cycle * (2 if args.quick else 10)
    t0 = time.perf_counter()
    figures: dict[str, Any] = dict.fromkeys(FIGURES)
    notes: list[str] = []

    envs = measure_envs(steps, rounds)
    figures.update({k: envs[k] for k in ("env_steps_per_s", "cartpole_steps_per_s",
                                         "raw_env_steps_per_s")})
    vec = measure_vector(args.num_envs, vector_steps, rounds)
    figures["vector_steps_per_s"] = vec["vector_steps_per_s"]
    figures["cartpole_vector_steps_per_s"] = vec["cartpole_vector_steps_per_s"]
    sim = measure_sim(rounds)
    figures.update({k: sim[k] for k in ("sim_requests_per_s", "sim_batched_requests_per_s")})
    fleet = measure_fleet(256, vector_steps, rounds)
    figures["fleet_phone_steps_per_s"] = fleet["fleet_phone_steps_per_s"]
    q = measure_qlearner(batches=20 if args.quick else 100)
    figures.update({k: q[k] for k in ("qlearner_act_ns", "qlearner_update_ns", "qtable_bytes")})
    notes += q["notes"]
    if args.skip_main_job:
        notes.append("main job skipped (--skip-main-job)")
    else:
        job = measure_main_job(timeout_s=300)
        figures["benchmark_wall_s"] = job["benchmark_wall_s"]
        notes += job["notes"]
    if not args.skip_startup:
        start_up = measure_startup()
        figures.update({k: v for k, v in start_up.items() if k.startswith("startup_")})
        notes += start_up["notes"]
    if args.grid:
        grid = measure_grid()
        figures["grid_wall_s"] = grid["grid_wall_s"]
        notes += grid["notes"]
    elapsed = time.perf_counter() - t0

    ratio = figures["env_steps_per_s"] / figures["cartpole_steps_per_s"]
    raw_ratio = figures["raw_env_steps_per_s"] / figures["cartpole_steps_per_s"]
    vector_ratio = figures["vector_steps_per_s"] / figures["cartpole_vector_steps_per_s"]
    rows = [
        ("AutoScale-v0, gym.make, resets included", "env_steps_per_s", "steps/s"),
        ("CartPole-v1, gym.make, same loop", "cartpole_steps_per_s", "steps/s"),
        ("AutoScale-v0, unwrapped", "raw_env_steps_per_s", "steps/s"),
        (f"native vector env, {args.num_envs} sub-envs", "vector_steps_per_s", "steps/s"),
        (f"CartPole-v1 native vector, {args.num_envs}", "cartpole_vector_steps_per_s", "steps/s"),
        ("sim: requests x all targets, 1 world", "sim_requests_per_s", "req/s"),
        ("sim: requests x all targets, 64 worlds", "sim_batched_requests_per_s", "req/s"),
        ("Q-learner decision (predict)", "qlearner_act_ns", "ns"),
        ("Q-learner update", "qlearner_update_ns", "ns"),
        ("Q-table", "qtable_bytes", "bytes"),
        ("main job (autoscale benchmark), end to end", "benchmark_wall_s", "s"),
        ("start-up: import + first env step, cold", "startup_env_cold_s", "s"),
        ("start-up: import + first env step, warm", "startup_env_warm_s", "s"),
        ("start-up: first vector step (1024), cold", "startup_vector_cold_s", "s"),
        ("start-up: first vector step (1024), warm", "startup_vector_warm_s", "s"),
        ("paper grid (--grid), autoscale sweep --workers 2", "grid_wall_s", "s"),
    ]
    rows.insert(5, ("fleet, 256 phones (phone-steps)", "fleet_phone_steps_per_s", "steps/s"))
    m = machine()
    print(f"autoscale-env bench ({'quick' if args.quick else 'full'}): {m['cpu']}, "
          f"{m['cores']} cores, Python {m['python']}, numpy {m['numpy']}, numba {m['numba']} "
          f"({m['numba_threads']} threads), gymnasium {m['gymnasium']}, load average "
          f"{m['load_average']}")
    print()
    print(f"| {'figure':<44} | {'key':<27} | {'value':>12} | unit    |")
    print(f"|{'-' * 46}|{'-' * 29}|{'-' * 14}|---------|")
    for label, key, unit in rows:
        print(f"| {label:<44} | {key:<27} | {fmt(figures[key], unit):>12} | {unit:<7} |")
    print()
    print(f"AutoScale / CartPole (gym.make, same loop): {ratio:.2f}x "
          f"(median of per-round ratios {envs['env_vs_cartpole_per_round']:.2f}x); "
          f"unwrapped AutoScale / wrapped CartPole: {raw_ratio:.2f}x")
    print(f"AutoScale / CartPole, native vector envs ({args.num_envs}): {vector_ratio:.2f}x "
          f"(median of per-round ratios {vec['vector_vs_cartpole_vector_per_round']:.2f}x)")
    checks = {
        "env_vs_cartpole": ratio,
        "vector_vs_cartpole_vector": vector_ratio,
        "vector_steps_per_s": figures["vector_steps_per_s"],
        "fleet_phone_steps_per_s": figures["fleet_phone_steps_per_s"],
        "qlearner_act_ns": figures["qlearner_act_ns"],
        "qtable_bytes": figures["qtable_bytes"],
        "grid_wall_s": figures["grid_wall_s"],
    }
    print("targets: " + ", ".join(
        f"{k} {op} {limit:g}: {check(checks[k], op, limit)}" for k, (op, limit) in TARGETS.items()))
    for note in notes:
        print(f"note: {note}")
    print(f"({steps:,} steps x {rounds} rounds per single env, {vector_steps} vector steps x "
          f"{rounds} rounds; {elapsed:.1f} s)")

    if args.json:
        payload = {
            **figures,
            "env_vs_cartpole": ratio,
            "env_vs_cartpole_per_round": envs["env_vs_cartpole_per_round"],
            "vector_vs_cartpole_vector": vector_ratio,
            "vector_vs_cartpole_vector_per_round": vec["vector_vs_cartpole_vector_per_round"],
            "meta": {"machine": m, "quick": args.quick, "steps": steps, "rounds": rounds,
                     "vector_steps": vector_steps, "num_envs": args.num_envs,
                     "elapsed_s": elapsed, "notes": notes,
                     "samples": {**envs["samples"], **vec["samples"], **sim["samples"],
                                 "fleet": fleet["samples"]}},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
