"""The paper's comparison: every agent x device x scenario x setting x seed, one table.

Each (agent, cell, seed) is one :class:`Task`, and :func:`run_task` is a pure function of the task
and the :class:`BenchmarkConfig`: its result does not depend on which process runs it or in what
order, which is what lets the sweep engines (local pool, Ray) reproduce a sequential run exactly.
"""

from __future__ import annotations

import csv
import hashlib
import json
import io
import math
import os
import shutil
import statistics
import time
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
from tqdm.auto import tqdm

import autoscale_env  # noqa: F401  (registers AutoScale-v0)
from agents import CLOUD, MOBILE_CPU, agent_class, make_agent
from agents.experiments.evaluation import TrainingMonitor, evaluate
from agents.experiments.tracking import ScalarWriter, log_evaluation, run_name, task_hparams
from autoscale_env.world.errors import AutoScaleError
from autoscale_env.world.files import PathLock, atomic_write, load_json

#: Offset between a task's training seed and its evaluation seed, so evaluation sees fresh requests.
EVAL_SEED_OFFSET = 10_000

RESULT_COLUMNS = [
    "agent", "device", "scenario", "setting", "seed", "energy_mj", "ppw_vs_cpu", "ppw_vs_cloud",
    "qos_violation_rate", "accuracy_violation_rate", "oracle_match", "oracle_match_ceiling",
    "near_optimal_rate", "ppw_vs_cpu_regular", "ppw_vs_cloud_regular", "ppw_vs_cpu_weak",
    "ppw_vs_cloud_weak", "energy_gap_to_oracle", "train_steps", "train_seconds", "eval_steps", "decision_us",
    "memory_bytes",
]
NETWORK_COLUMNS = ["agent", "device", "scenario", "setting", "seed", "network", "requests",
                   "energy_mj", "cpu_energy_mj"]
CURVE_COLUMNS = ["agent", "device", "scenario", "setting", "seed", "step", "oracle_match",
                 "energy_mj", "qos_violation_rate", "reward_mean"]


@dataclass(frozen=True)
class Task:
    """One unit of work: train and evaluate one agent on one cell with one seed."""

    agent: str
    device: str
    scenario: str
    setting: str
    seed: int

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return (self.agent, self.device, self.scenario, self.setting, self.seed)


@dataclass(frozen=True)
class BenchmarkConfig:
    """Options shared by every task of a run."""

    train_steps: int = 64_000
    """Online training requests per task (the paper's 64,000 samples)."""
    eval_steps: int = 5_000
    """Greedy evaluation requests per task, on fresh seeds."""
    log_interval: int = 1_000
    """Training steps per TensorBoard point."""
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-agent overrides, e.g. ``{"qlearning": {"epsilon": 0.05}}``."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra ``gym.make`` arguments (e.g. ``reward``)."""

    def fingerprint(self) -> dict[str, Any]:
        """Everything that shapes a row, as JSON data: recorded in ``config.json`` of the output
        directory, and compared on ``--resume`` / sweep reruns (see :class:`ResultStore`).

        Every field of the config is in it (a new option is recorded without further code), plus
        the package version and the content hash of a features file given by path.
        """
        doc = json.loads(json.dumps(asdict(self), sort_keys=True, default=str))
        features = self.env_kwargs.get("features")
        if features:
            from autoscale_env.world import config
            path = config.resolve_features_path(features)
            if features not in config.FEATURE_SETS and path.is_file():
                doc["features_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        # the defaults the options fall back on, so a changed default is a changed config
        doc["env_defaults"] = {"reward": "energy", "features": "paper", "obs_mode": "paper"}
        doc["default_hyperparameters"] = _default_hyperparameters()
        doc["package_version"] = autoscale_env.__version__
        return doc


def grid(agents: Iterable[str], devices: Iterable[str], scenarios: Iterable[str],
         settings: Iterable[str], seeds: int) -> list[Task]:
    """Every combination, in a stable order."""
    return [Task(a, d, sc, st, s) for d in devices for sc in scenarios for st in settings
            for a in agents for s in range(seeds)]


def run_task(task: Task, cfg: BenchmarkConfig, out: Path | None, *,
             progress: bool = False) -> dict[str, list[dict]]:
    """Train (if the agent learns) and evaluate; returns the rows for every output table.

    ``progress`` shows a progress bar while a slow (SB3) learner trains."""
    # an agent class may need its envs made differently (e.g. obs_mode="extended" for raw context)
    cls = agent_class(task.agent)
    make = dict(device=task.device, scenario=task.scenario, setting=task.setting,
                **{**cls.env_kwargs, **cfg.env_kwargs})
    hyperparameters = cfg.hyperparameters.get(task.agent, {})
    writer = ScalarWriter(out / "tb" / run_name(*task.key)) if out is not None else None
    train_seconds, curve = 0.0, []
    eval_env = gym.make("AutoScale-v0", **make)
    try:
        if cls.learns:
            train_env = gym.make("AutoScale-v0", **make)
            agent = make_agent(task.agent, train_env, seed=task.seed, **hyperparameters)
            if writer is not None and writer.enabled and cls.tensorboard:
                agent.tensorboard_log = str(writer.logdir)  # the agent's own scalars, beside ours
            if writer is not None:
                writer.text("hyperparameters", _markdown_table(
                    {"agent": task.agent, **asdict(cfg), **agent.hparams}))
            monitor = TrainingMonitor(writer, cfg.log_interval)
            t0 = time.perf_counter()
            # a bar per task only for the slow deep learners (the run has its own bar)
            agent.learn(cfg.train_steps, callback=monitor, progress_bar=progress and cls.tensorboard)
            train_seconds = time.perf_counter() - t0
            monitor.flush()
            curve = monitor.curve
            train_env.close()
        else:
            agent = make_agent(task.agent, eval_env, seed=task.seed, **hyperparameters)
        result = evaluate(agent, eval_env, cfg.eval_steps, seed=EVAL_SEED_OFFSET + task.seed,
                          cpu_target=MOBILE_CPU.split(":", 1)[1],
                          cloud_target=CLOUD.split(":", 1)[1])
    finally:
        eval_env.close()
    metrics = result.metrics()
    base = dict(zip(("agent", "device", "scenario", "setting", "seed"), task.key))
    row = {**base, **metrics, "train_steps": cfg.train_steps if cls.learns else 0,
           "train_seconds": train_seconds, "eval_steps": cfg.eval_steps,
           "memory_bytes": int(agent.nbytes)}
    if writer is not None:
        tags = log_evaluation(writer, row, learns=cls.learns, train_steps=cfg.train_steps,
                              log_interval=cfg.log_interval)
        writer.hparams(task_hparams(row, cfg.env_kwargs, agent),
                       {tag: row[tag.split("/", 1)[1]] for tag in tags})
        writer.close()
    networks = [{**base, "network": net, "requests": v[2], "energy_mj": v[0], "cpu_energy_mj": v[1]}
                for net, v in sorted(result.per_network.items())]
    curves = [{**base, "step": p["step"], "oracle_match": p["autoscale/oracle_match"],
               "energy_mj": p["autoscale/energy_mj"],
               "qos_violation_rate": p["autoscale/qos_violation_rate"],
               "reward_mean": p["rollout/reward_mean"]} for p in curve]
    return {"results": [row], "per_network": networks, "curves": curves}


# ----------------------------------------------------------------------------------------------
# Output files


class ConfigMismatch(AutoScaleError, ValueError):
    """``--resume`` (or a sweep rerun) into results made with another configuration."""


class ResultStore:
    """The output directory: append-only CSVs (flushed per task), then summary and figures.

    Refuses to touch a directory that already holds results unless ``force`` (wipe and start
    over) or ``resume`` (keep finished tasks, run only the missing ones). With ``config``, the
    run's :meth:`BenchmarkConfig.fingerprint` is written to ``config.json`` and a resume into
    results made with another one is refused with :class:`ConfigMismatch` naming the fields, so
    different configurations never share a summary line.

    The directory is locked (:class:`~autoscale_env.world.files.PathLock`) while the store is open: a
    second concurrent run into it fails at once, naming the holder's PID. On resume, side-table
    rows (``per_network``, ``curves``) of tasks without a ``results`` row (a kill between the
    appends) are dropped, so a rerun never duplicates them.
    """

    TABLES = {"results": RESULT_COLUMNS, "per_network": NETWORK_COLUMNS, "curves": CURVE_COLUMNS}

    def __init__(self, out: str | Path, *, force: bool = False, resume: bool = False,
                 config: BenchmarkConfig | None = None):
        self.out = Path(out)
        self._lock = PathLock(self.out, inside=True).acquire()  # before looking at anything
        try:
            self._open(force, resume, config)
        except BaseException:
            self.close()
            raise

    def _open(self, force: bool, resume: bool, config: BenchmarkConfig | None) -> None:
        existing = self.out / "results.csv"
        if existing.exists() and not (force or resume):
            raise FileExistsError(
                f"{existing} already exists; pass --force to overwrite it or --resume to finish "
                "only the missing tasks")
        if force and self.out.exists():
            for name in [*(f"{t}.csv" for t in self.TABLES), "summary.md", "config.json"]:
                (self.out / name).unlink(missing_ok=True)
            shutil.rmtree(self.out / "tb", ignore_errors=True)
            for png in self.out.glob("*.png"):
                png.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        self._bound: dict[str, Any] | None = None
        if config is not None:
            self.bind(config)
        self.done = {self._key(r) for r in self.read("results")} if resume else set()
        if resume:
            self._drop_orphans()

    def bind(self, config: BenchmarkConfig) -> None:
        """Record ``config`` in ``config.json``, or refuse (:class:`ConfigMismatch`) if the
        directory holds results of another one. Every runner calls it before its first task."""
        mine = config.fingerprint()
        if self._bound is not None:
            if self._bound != mine:
                raise ConfigMismatch(f"{self.out}: one store, two configurations: "
                                     f"{'; '.join(_differences(self._bound, mine))}")
            return
        self._check_config(mine, has_results=(self.out / "results.csv").exists())
        self._bound = mine

    def _check_config(self, mine: dict[str, Any], has_results: bool) -> None:
        path = self.out / "config.json"
        if path.exists():
            diffs = recorded_differences(path, mine, ConfigMismatch)
            if diffs:
                raise ConfigMismatch(
                    f"{self.out} holds results of another configuration; differing fields "
                    f"(recorded -> this run): {'; '.join(diffs)}. Use another --out, or --force "
                    f"to discard those results")
            return
        if has_results and self.read("results"):
            raise ConfigMismatch(
                f"{self.out} holds results without a config.json (made by an older version), so "
                f"they cannot be checked against this run; use another --out, or --force")
        atomic_write(path, json.dumps(mine, indent=1, sort_keys=True) + "\n")

    def _drop_orphans(self) -> None:
        """Rewrite the side tables without rows of tasks that have no results row."""
        for table in ("per_network", "curves"):
            path = self.out / f"{table}.csv"
            rows = self.read(table)
            keep = [r for r in rows if self._key(r) in self.done]
            if len(keep) == len(rows):
                continue
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=self.TABLES[table], extrasaction="ignore")
            w.writeheader()
            w.writerows(keep)
            atomic_write(path, buf.getvalue())

    def close(self) -> None:
        """Release the directory lock (also released when the process ends)."""
        self._lock.release()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _key(row: dict[str, Any]) -> tuple:
        return (row["agent"], row["device"], row["scenario"], row["setting"], int(row["seed"]))

    def read(self, table: str) -> list[dict[str, str]]:
        """Rows of one CSV table (complete lines only)."""
        path = self.out / f"{table}.csv"
        if not path.exists():
            return []
        with open(path, newline="") as f:
            text = f.read()
        if text and not text.endswith("\n"):  # a torn last line from a kill: drop it
            text = text[: text.rfind("\n") + 1]
        return list(csv.DictReader(text.splitlines()))

    def append(self, rows: dict[str, list[dict]]) -> None:
        """Append one task's rows; the results row goes last, so a row there means 'finished'."""
        for table in ("per_network", "curves", "results"):
            path = self.out / f"{table}.csv"
            self._repair(path)
            new = not path.exists() or path.stat().st_size == 0
            with open(path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.TABLES[table], extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerows(_format(r) for r in rows[table])
                f.flush()
                os.fsync(f.fileno())
        self.done.add(self._key(rows["results"][0]))

    @staticmethod
    def _repair(path: Path) -> None:
        """Cut a torn last line (left by a kill mid-write) before appending after it."""
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def _default_hyperparameters() -> dict[str, Any]:
    from agents.qlearning import QLearningConfig
    from agents.sb3 import HYPERPARAMS_FILE
    with open(HYPERPARAMS_FILE, "rb") as f:
        sb3 = tomllib.load(f)
    return {"qlearning": asdict(QLearningConfig()), **sb3}


_ABSENT = object()


def recorded_differences(path: Path, mine: dict[str, Any], error: type[Exception]) -> list[str]:
    """Fields where the configuration recorded in JSON file ``path`` differs from ``mine``
    (``"field: recorded -> mine"``); ``error`` when the file cannot be read."""
    try:
        theirs = load_json(path, ValueError, what="run configuration")
    except (OSError, ValueError) as e:
        raise error(f"{path}: unreadable ({e}); pass --force to start over") from None
    return _differences(theirs, mine)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted fields where two JSON documents differ, as ``field: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k, _ABSENT), new.get(k, _ABSENT),
                                f"{prefix}.{k}" if prefix else str(k))
        return out

    def show(v: Any) -> str:
        return "(absent)" if v is _ABSENT else json.dumps(v)
    return [] if old == new else [f"{prefix or 'config'}: {show(old)} -> {show(new)}"]


def _format(row: dict[str, Any]) -> dict[str, Any]:
    # repr() keeps every float bit for bit, so reruns and other engines compare exactly
    return {k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()}


def _markdown_table(values: dict[str, Any]) -> str:
    lines = ["| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |" for k, v in values.items()]
    return "\n".join(lines)


def run(tasks: Sequence[Task], cfg: BenchmarkConfig, store: ResultStore, *,
        progress: bool = True, tensorboard: bool = True) -> None:
    """Run the tasks not yet in ``store`` one after another (see ``agents.experiments.sweep`` for parallel).

    ``tensorboard=False`` skips the TensorBoard runs under ``tb/`` (they cost about as much as
    evaluating a non-learning agent)."""
    store.bind(cfg)
    todo = [t for t in tasks if t.key not in store.done]
    with tqdm(total=len(todo), disable=not progress, desc="benchmark", unit="task") as bar:
        for task in todo:
            bar.set_postfix_str(f"{task.agent} {task.device}/{task.scenario}/{task.setting} s{task.seed}")
            store.append(run_task(task, cfg, store.out if tensorboard else None, progress=progress))
            bar.update(1)


# ----------------------------------------------------------------------------------------------
# Summary

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
       10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t interval (0 for a single value)."""
    n = len(values)
    m = statistics.fmean(values)
    if n < 2:
        return m, 0.0
    dof = n - 1
    t = T95.get(dof) or T95[max(k for k in T95 if k <= dof)] if dof <= 30 else 1.96
    return m, t * statistics.stdev(values) / math.sqrt(n)


SUMMARY_METRICS = [
    ("energy_mj", "energy/req (mJ)", 1.0, "{:.1f}"),
    ("ppw_vs_cpu", "eff. vs mobile CPU (x)", 1.0, "{:.2f}"),
    ("ppw_vs_cloud", "eff. vs cloud (x)", 1.0, "{:.2f}"),
    ("oracle_match", "oracle match (%)", 100.0, "{:.1f}"),
    ("oracle_match_ceiling", "state ceiling (%)", 100.0, "{:.1f}"),
    ("near_optimal_rate", "near-optimal (%)", 100.0, "{:.1f}"),
    ("energy_gap_to_oracle", "energy vs oracle (+%)", 100.0, "{:.1f}"),
    ("qos_violation_rate", "QoS viol. (%)", 100.0, "{:.1f}"),
    ("accuracy_violation_rate", "acc. viol. (%)", 100.0, "{:.1f}"),
]


def summarize(rows: Sequence[dict[str, Any]]) -> str:
    """The paper-style Markdown table: mean ± 95 % interval over seeds, per agent and cell."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["device"], r["scenario"], r["setting"], r["agent"])].append(r)
    head = ["device", "scenario", "setting", "agent", "seeds"] + [m[1] for m in SUMMARY_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], agent_order(k[3]))):
        cells = [*key, str(len(groups[key]))]
        for metric, _, scale, fmt in SUMMARY_METRICS:
            m, h = mean_ci([float(r[metric]) * scale for r in groups[key]])
            cells.append(fmt.format(m) + (f" ± {fmt.format(h)}" if h else ""))
        lines.append("| " + " | ".join(cells) + " |")
    # the paper's headline: efficiency averaged over every cell. Ratios are averaged
    # geometrically (a few extreme cells must not dominate), the arithmetic mean beside it.
    per_agent: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        per_agent[r["agent"]].append(r)
    lines += ["", "Averaged over all cells and seeds (efficiency ratios: geometric mean, "
                  "arithmetic mean in brackets; rates: arithmetic mean):", "",
              "| agent | eff. vs mobile CPU (x) | eff. vs cloud (x) | oracle match (%) | "
              "near-optimal (%) | state ceiling (%) | energy vs oracle (+%) | QoS viol. (%) |",
              "|---|---|---|---|---|---|---|---|"]
    for agent in sorted(per_agent, key=agent_order):
        rs = per_agent[agent]
        avg = {k: statistics.fmean(_number(r.get(k)) for r in rs) for k, *_ in SUMMARY_METRICS}
        geo = {k: geometric_mean([float(r[k]) for r in rs]) for k in ("ppw_vs_cpu", "ppw_vs_cloud")}
        lines.append(f"| {agent} | {geo['ppw_vs_cpu']:.2f} ({avg['ppw_vs_cpu']:.2f}) | "
                     f"{geo['ppw_vs_cloud']:.2f} ({avg['ppw_vs_cloud']:.2f}) | "
                     f"{100 * avg['oracle_match']:.1f} | {100 * avg['near_optimal_rate']:.1f} | "
                     f"{100 * avg['oracle_match_ceiling']:.1f} | "
                     f"{100 * avg['energy_gap_to_oracle']:.1f} | "
                     f"{100 * avg['qos_violation_rate']:.1f} |")
    return "\n".join(lines) + "\n"


def _number(value: Any) -> float:
    """A results field as a float: a missing or empty field is NaN, and 0 (or "0.0") stays 0."""
    if value is None or value == "":
        return float("nan")
    return float(value)


def geometric_mean(values: Sequence[float]) -> float:
    """Geometric mean of positive ratios, ignoring NaN (NaN if none is left)."""
    xs = [v for v in values if v == v]
    if not xs:
        return float("nan")
    return math.exp(statistics.fmean(math.log(v) for v in xs))


def agent_order(name: str) -> tuple[int, str]:
    order = ["qlearning", "dqn", "ppo", "a2c", "oracle", MOBILE_CPU, CLOUD, "random"]
    return (order.index(name) if name in order else len(order), name)


def finish(store: ResultStore, *, figures: bool = True) -> str:
    """Write ``summary.md`` (and figures) from everything in the store; returns the summary."""
    rows = store.read("results")
    text = "# Benchmark summary\n\nMean ± 95 % interval over seeds.\n\n" + summarize(rows)
    atomic_write(store.out / "summary.md", text)
    if figures:
        from agents.experiments.figures import write_figures
        write_figures(store)
    return text


# ----------------------------------------------------------------------------------------------
# A run's plan and its closing lines (``autoscale benchmark`` and ``sweep``)


def plan(agents: Sequence[str], devices: Sequence[str], scenarios: Sequence[str],
         settings: Sequence[str], seeds: int, *, train_steps: int = 64_000,
         eval_steps: int = 5_000, log_interval: int = 1_000,
         hyperparameters: dict[str, dict[str, Any]] | None = None, reward: str = "energy",
         features: str = "paper") -> tuple[list[Task], BenchmarkConfig]:
    """The tasks and the config of a benchmark over the given names; every name is checked
    first (an unknown one raises, naming the valid ones) so no task starts on a typo."""
    from autoscale_env.world import config
    for d in devices:
        config.resolve_device_path(d)
    for s in scenarios:
        config.get_scenario(s)
    for s in settings:
        config.check_setting(s)
    for a in agents:
        agent_class(a)
    config.load_features(features)  # a bad name or file fails before any task starts
    env_kwargs: dict[str, Any] = {"reward": reward} if reward != "energy" else {}
    if features != "paper":
        if features not in config.FEATURE_SETS:  # workers may run elsewhere: an absolute path
            features = str(Path(features).resolve())
        env_kwargs["features"] = features
    cfg = BenchmarkConfig(train_steps=train_steps, eval_steps=eval_steps,
                          log_interval=log_interval, hyperparameters=hyperparameters or {},
                          env_kwargs=env_kwargs)
    return grid(agents, devices, scenarios, settings, seeds), cfg


#: What each output of a benchmark or sweep holds, in the order they are listed.
OUTPUTS = {
    "results.csv": "one row per agent x cell x seed",
    "per_network.csv": "energy per network (figures)",
    "curves.csv": "training curves (figures)",
    "summary.md": "the table above",
    "config.json": "the run's configuration",
}


def output_listing(out: str | Path) -> str:
    """The closing lines of ``benchmark`` / ``sweep``: every file the run produced."""
    out = Path(out)
    lines = [f"wrote to {out}/:"]
    for name, what in OUTPUTS.items():
        if (out / name).exists():
            lines.append(f"  {out / name}  ({what})")
    for png in sorted(out.glob("*.png")):
        lines.append(f"  {png}  (figure)")
    tb = out / "tb"
    if tb.is_dir():
        runs = sum(1 for d in tb.iterdir() if d.is_dir())
        lines.append(f"  {tb}/  ({runs} TensorBoard runs: tensorboard --logdir {tb})")
    return "\n".join(lines)


def finished_tasks(out: str | Path) -> int:
    """How many tasks have a row in ``out/results.csv`` (what an interrupted run keeps)."""
    try:
        with open(Path(out) / "results.csv", newline="") as f:
            return sum(1 for _ in csv.DictReader(f))
    except OSError:
        return 0
