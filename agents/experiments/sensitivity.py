"""``autoscale sensitivity``: which conclusions hold whatever the world's estimates are.

Every number the data marks as an estimate is a parameter (grouped where numbers move together, with
the range the data declares or +-50 %; see :mod:`autoscale_env.tools.estimates`). The analysis runs in
phases over perturbed worlds, each world scored by :mod:`agents.experiments.world_metrics` on the same requests
(oracle efficiency vs the mobile CPU and vs the cloud, the state ceiling, each target's share of
the oracle's decisions):

1. ``morris``: elementary-effects screening over every parameter (SALib; ``--trajectories``
   trajectories of ``k + 1`` worlds) -> ``mu_star`` (mean absolute effect over the range),
   ``sigma`` (interaction / non-linearity), with bootstrap confidence intervals.
2. ``sobol`` (``--method sobol``): first-order and total Sobol indices ``S1``/``ST`` for the
   ``--sobol-top`` parameters Morris ranks highest for each headline metric (``--samples`` base
   samples, ``N (k + 2)`` worlds for the ``k`` of them; the others stay at their data values).
3. ``oat``: each of the top parameters per metric at its low and its high end alone, the others at
   their data values: the bars of the tornado figures.

Outputs in ``--out``: ``samples.csv`` (one row per world, appended as results arrive),
``sensitivity.csv`` (parameter, metric, mu_star, sigma, S1, ST with confidence intervals),
``tornado_<metric>.png`` per metric, ``tornado_headline.png`` (vs CPU and vs cloud side by side),
and ``sensitivity.md`` with the robust and the fragile conclusions. A rerun with the same
configuration skips the worlds already in ``samples.csv`` (so a killed run loses only what was in
flight); a different configuration in the same directory is refused unless ``--force``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from agents.experiments.world_metrics import (CLOUD_TARGET, HEADLINE_METRICS, MOBILE_CPU_TARGET,
                                  QLEARNING_METRIC, Cell, grid_cells, metric_names, world_metrics)
from autoscale_env.world import config
from autoscale_env.world.files import atomic_write
from autoscale_env.world.errors import ConfigError, DependencyMissing
from autoscale_env.world.files import load_json
from autoscale_env.tools.estimates import Estimate, build_world, enumerate_estimates, load_world

METHODS = ("morris", "sobol")
ENGINES = ("local", "ray")
PHASES = ("morris", "sobol", "oat")
DEVICES = ("mi8pro", "galaxy_s10e", "moto_x_force")
SCENARIOS = ("non_streaming", "streaming", "translation")
SETTINGS = ("static", "dynamic")
#: Worlds evaluated per task sent to a worker (amortises start-up, keeps the bar moving).
CHUNK = 4
#: Memory the design may take: the sample matrix and the result rows of every world.
MAX_DESIGN_BYTES = 1 << 30
#: Bytes one world costs in the design, per parameter (a float64 in the matrix, its JSON in the
#: ``samples.csv`` row) and flat (the row's metrics and the dict holding it).
WORLD_BYTES_PER_PARAMETER, WORLD_BYTES = 32, 1024
#: Bytes one episode of 101 requests costs while a cell is evaluated: every target's latency,
#: energy and accuracy plus the context columns, float64, with the temporaries (about 4x).
EPISODE_BYTES = 128 * 1024
#: Memory one worker may spend on a cell's episodes.
MAX_EPISODE_BYTES = 1 << 30
#: Most episodes per cell and world (1 GiB / 128 KiB).
MAX_EPISODES = MAX_EPISODE_BYTES // EPISODE_BYTES
#: Most worker processes, even when forced past the core count.
MAX_WORKERS = 256


def world_bytes(n_parameters: int) -> int:
    """Memory one world of the design costs (see :data:`WORLD_BYTES_PER_PARAMETER`)."""
    return WORLD_BYTES + WORLD_BYTES_PER_PARAMETER * n_parameters


def check_workers(workers: int, *, force: bool = False, cpus: int | None = None) -> int:
    """``workers`` if it is 1..the core count (1..:data:`MAX_WORKERS` when ``force``).

    Raises:
        ConfigError: naming --workers, the bound and why.
    """
    cpus = cpus or os.cpu_count() or 1
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
    if workers > MAX_WORKERS:
        raise ConfigError(f"--workers {workers} is over the limit of {MAX_WORKERS} processes")
    if workers > cpus and not force:
        raise ConfigError(f"--workers {workers} is more than the {cpus} cores here: the extra "
                          f"processes would only compete for them (and each holds a world in "
                          f"memory); pass --force-workers to start them anyway")
    return int(workers)


@dataclass(frozen=True)
class SensitivityConfig:
    """Everything that decides the worlds evaluated and their results (compared on resume)."""

    method: str = "sobol"
    trajectories: int = 10
    """Morris trajectories (each is ``k + 1`` worlds)."""
    samples: int = 128
    """Sobol base samples N (a power of 2; ``N (k + 2)`` worlds for ``k`` parameters)."""
    sobol_top: int = 3
    """Per headline metric, the parameters ranked highest by Morris that get Sobol indices."""
    tornado_top: int = 10
    """Parameters per metric in the one-at-a-time (tornado) phase."""
    levels: int = 4
    """Morris grid levels."""
    episodes: int = 40
    """Episodes (of 101 requests) per cell and world."""
    seed: int = 0
    cells: tuple[tuple[str, str, str], ...] = ()
    features: str = "paper"
    qlearning_steps: int = 0
    """Online training requests of the Q-learner per cell and world (0: no Q-learner metric)."""
    parameters: tuple[tuple[str, str, float, float, float], ...] = ()
    """(name, mode, low, high, nominal) of every parameter, in order."""
    data_digest: str = ""
    """Hash of the world's data files: results of other data are never mixed in."""

    def problem(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """SALib's problem dict over ``names`` (default: every parameter)."""
        params = [p for p in self.parameters if names is None or p[0] in names]
        return {"num_vars": len(params), "names": [p[0] for p in params],
                "bounds": [[p[2], p[3]] for p in params]}

    @property
    def nominal(self) -> np.ndarray:
        return np.array([p[4] for p in self.parameters])

    @property
    def cell_list(self) -> list[Cell]:
        return [Cell(*c) for c in self.cells]

    @property
    def metrics(self) -> list[str]:
        return metric_names(list(dict.fromkeys(c[0] for c in self.cells)),
                            qlearning=self.qlearning_steps > 0)


def make_config(*, method: str, trajectories: int, samples: int, sobol_top: int, tornado_top: int,
                episodes: int, seed: int, cells: Sequence[Cell], features: str = "paper",
                qlearning_steps: int = 0,
                estimates: Sequence[Estimate] | None = None) -> SensitivityConfig:
    """A checked configuration over every estimate (or the given ones)."""
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    for name, value, minimum in (("--trajectories", trajectories, 2), ("--samples", samples, 2),
                                 ("--sobol-top", sobol_top, 1), ("--tornado-top", tornado_top, 1),
                                 ("--episodes", episodes, 1)):
        if isinstance(value, bool) or int(value) != value:
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        if value < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if isinstance(seed, bool) or int(seed) != seed or not 0 <= seed < 2**32:
        raise ConfigError(f"--seed must be an integer in 0..2**32-1 (SALib and numpy seeds), "
                          f"got {seed!r}")
    if episodes > MAX_EPISODES:
        raise ConfigError(
            f"--episodes {episodes} is over the limit of {MAX_EPISODES}: a cell's episodes are "
            f"drawn at once, ~{EPISODE_BYTES // 1024} KiB each, so {episodes} would need "
            f"~{episodes * EPISODE_BYTES / 2**30:.3g} GiB per worker (limit "
            f"{MAX_EPISODE_BYTES / 2**30:g} GiB)")
    if qlearning_steps < 0:
        raise ConfigError(f"--qlearning-steps must be >= 0, got {qlearning_steps}")
    if samples & (samples - 1):
        raise ConfigError(f"--samples must be a power of 2 (Sobol sequences), got {samples}")
    if not cells:
        raise ConfigError("no cells: give at least one --device, --scenario and --setting")
    for c in cells:
        config.resolve_device_path(c.device)
        config.get_scenario(c.scenario)
        config.check_setting(c.setting)
    config.load_features(features)
    est = tuple(estimates if estimates is not None else enumerate_estimates())
    # The designs' sizes, checked before SALib allocates them: Morris has trajectories x (k + 1)
    # worlds over all k parameters, Sobol samples x (k' + 2) over the k' it refines.
    k, top = len(est), min(sobol_top, len(est))
    per_world = world_bytes(k)
    max_worlds = MAX_DESIGN_BYTES // per_world
    for name, value, worlds_each in (("--trajectories", trajectories, k + 1),
                                     ("--samples", samples, top + 2)):
        if name == "--samples" and method != "sobol":
            continue
        if value * worlds_each > max_worlds:
            raise ConfigError(
                f"{name} {value} means {value * worlds_each} worlds (~"
                f"{value * worlds_each * per_world / 2**30:.3g} GiB for the design and its "
                f"results, {per_world} bytes each); the limit is {max_worlds // worlds_each} "
                f"({MAX_DESIGN_BYTES / 2**30:g} GiB)")
    return SensitivityConfig(
        method=method, trajectories=trajectories, samples=samples,
        sobol_top=min(sobol_top, len(est)), tornado_top=min(tornado_top, len(est)),
        episodes=episodes, seed=seed, cells=tuple((c.device, c.scenario, c.setting) for c in cells),
        features=features, qlearning_steps=qlearning_steps,
        parameters=tuple((e.name, e.mode, float(e.low), float(e.high), float(e.nominal)) for e in est),
        data_digest=data_digest())


def data_digest() -> str:
    """SHA-256 (16 hex digits) over the bundled data files the world is read from."""
    h = hashlib.sha256()
    for p in sorted(config.DATA_DIR.rglob("*.toml")):
        h.update(str(p.relative_to(config.DATA_DIR)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Evaluating worlds (pure functions of the config and a parameter vector: any worker, any order)


def evaluate_world(cfg: SensitivityConfig, x: Sequence[float]) -> dict[str, float]:
    """The metrics of the world whose parameters take the values ``x`` (in ``cfg`` order)."""
    overrides = {p[0]: float(v) for p, v in zip(cfg.parameters, x) if float(v) != p[4]}
    phones = tuple(dict.fromkeys(c[0] for c in cfg.cells))
    world = load_world(overrides, phones)
    return world_metrics(
        lambda cell: build_world(overrides, device=cell.device, scenario=cell.scenario,
                                 setting=cell.setting, world=world),
        cfg.cell_list, episodes=cfg.episodes, seed=cfg.seed, features=cfg.features,
        qlearning_steps=cfg.qlearning_steps)


def evaluate_chunk(cfg: SensitivityConfig, rows: Sequence[tuple[str, int, tuple[float, ...]]]
                   ) -> list[dict[str, Any]]:
    """Evaluate ``(phase, index, x)`` rows; returns ``samples.csv`` rows."""
    return [{"phase": phase, "index": index, **evaluate_world(cfg, x),
             "x": json.dumps([float(v) for v in x])} for phase, index, x in rows]


# ----------------------------------------------------------------------------------------------
# The results directory


class SampleStore:
    """``config.json`` and the append-only ``samples.csv`` of one analysis directory."""

    def __init__(self, out: str | Path, cfg: SensitivityConfig, *, force: bool = False):
        self.out = Path(out)
        self.cfg = cfg
        self.columns = ["phase", "index", *cfg.metrics, "x"]
        cfg_path = self.out / "config.json"
        if force and self.out.exists():
            for name in ("samples.csv", "config.json", "sensitivity.csv", "sensitivity.md"):
                (self.out / name).unlink(missing_ok=True)
            for png in self.out.glob("tornado_*.png"):
                png.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        mine = json.loads(json.dumps(asdict(cfg)))
        if cfg_path.exists():
            theirs = load_json(cfg_path, ConfigError, what="analysis configuration")
            if theirs != mine:
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise FileExistsError(
                    f"{self.out} holds an analysis with another configuration (differs in: "
                    f"{', '.join(diff)}); use another --out, or --force to discard it")
        else:
            atomic_write(cfg_path, json.dumps(mine, indent=1) + "\n")
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        path = self.out / "samples.csv"
        if path.exists():
            _repair(path)
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    self.rows[(r["phase"], int(r["index"]))] = r

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append finished worlds, flushed to disk before returning."""
        path = self.out / "samples.csv"
        new = not path.exists() or path.stat().st_size == 0
        rows = list(rows)
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                w.writeheader()
            w.writerows({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()}
                        for r in rows)
            f.flush()
            os.fsync(f.fileno())
        for r in rows:
            self.rows[(r["phase"], int(r["index"]))] = r

    def y(self, phase: str, n: int, metric: str) -> np.ndarray:
        """Metric values of worlds ``0..n-1`` of ``phase``."""
        return np.array([float(self.rows[(phase, i)][metric]) for i in range(n)])


def _repair(path: Path) -> None:
    """Cut a torn last line (left by a kill mid-write)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


# ----------------------------------------------------------------------------------------------
# Engines


def _run_rows(store: SampleStore, phase: str, xs: np.ndarray, *, engine: str, workers: int,
              address: str | None, progress: bool) -> None:
    todo = [(phase, i, tuple(float(v) for v in x)) for i, x in enumerate(xs)
            if (phase, i) not in store.rows]
    if not todo:
        return
    chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
    with tqdm(total=len(todo), disable=not progress, desc=f"sensitivity {phase}",
              unit="world") as bar:
        def done(rows):
            store.append(rows)
            bar.update(len(rows))
        if engine == "ray":
            _ray(store.cfg, chunks, done, workers, address)
        elif workers <= 1:
            for chunk in chunks:
                done(evaluate_chunk(store.cfg, chunk))
        else:
            _pool(store.cfg, chunks, done, workers)


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def _pool(cfg, chunks, done: Callable, workers: int) -> None:
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_one_thread)
    try:
        futures = {pool.submit(evaluate_chunk, cfg, c) for c in chunks}
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for f in finished:
                done(f.result())
    finally:  # Ctrl-C or an error: drop what has not started; finished worlds are on disk
        pool.shutdown(wait=True, cancel_futures=True)


def _ray(cfg, chunks, done: Callable, workers: int, address: str | None) -> None:
    try:
        import ray
    except ImportError:
        raise DependencyMissing("ray", "distributed", "--engine ray") from None
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(evaluate_chunk)
        cfg_ref = ray.put(cfg)
        refs = [remote.remote(cfg_ref, c) for c in chunks]
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            done(ray.get(ready[0]))
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------
# The analysis


@dataclass
class Analysis:
    """Indices per (parameter, metric) and every evaluated world's metrics."""

    cfg: SensitivityConfig
    morris: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """metric -> parameter -> mu_star, mu_star_conf, sigma, mu."""
    sobol: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """metric -> parameter -> S1, S1_conf, ST, ST_conf."""
    sobol_names: list[str] = field(default_factory=list)
    oat: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    """metric -> parameter -> (value at low end, value at high end)."""
    nominal: dict[str, float] = field(default_factory=dict)
    worlds: dict[str, np.ndarray] = field(default_factory=dict)
    """metric -> values over every evaluated world."""

    def ranking(self, metric: str) -> list[str]:
        """Parameters by Morris mu_star, largest first (ties by name)."""
        m = self.morris[metric]
        return sorted(m, key=lambda p: (-_finite(m[p]["mu_star"]), p))


def _finite(v: float) -> float:
    return v if math.isfinite(v) else 0.0


def run(cfg: SensitivityConfig, out: str | Path, *, engine: str = "local", workers: int = 1,
        address: str | None = None, force: bool = False, progress: bool = True,
        force_workers: bool = False) -> Analysis:
    """Run (or finish) every phase and write the outputs; returns the analysis.

    ``workers`` must not pass the core count unless ``force_workers`` (see
    :func:`check_workers`)."""
    from SALib.analyze import morris as morris_analyze
    from SALib.analyze import sobol as sobol_analyze
    from SALib.sample import morris as morris_sample
    from SALib.sample import sobol as sobol_sample

    if engine != "ray" or address is None:  # a cluster's size is the cluster's business
        check_workers(workers, force=force_workers)
    store = SampleStore(out, cfg, force=force)
    an = Analysis(cfg)
    go = dict(engine=engine, workers=workers, address=address, progress=progress)
    nominal = cfg.nominal
    names = [p[0] for p in cfg.parameters]

    # 1. Morris over every parameter (the nominal world rides along as row 0 of "oat")
    problem = cfg.problem()
    xm = morris_sample.sample(problem, cfg.trajectories, num_levels=cfg.levels, seed=cfg.seed)
    _run_rows(store, "morris", xm, **go)
    for metric in cfg.metrics:
        y = store.y("morris", len(xm), metric)
        with np.errstate(all="ignore"):
            res = morris_analyze.analyze(problem, xm, y, num_levels=cfg.levels,
                                         seed=_analysis_seed(cfg), print_to_console=False)
        an.morris[metric] = {n: {"mu_star": float(res["mu_star"][i]),
                                 "mu_star_conf": float(res["mu_star_conf"][i]),
                                 "sigma": float(res["sigma"][i]), "mu": float(res["mu"][i])}
                             for i, n in enumerate(names)}
    phases = [("morris", len(xm))]

    # 2. Sobol on the parameters Morris ranks highest for the headline metrics
    if cfg.method == "sobol":
        an.sobol_names = top_parameters(an, HEADLINE_METRICS, cfg.sobol_top, per_metric=True)
        sub = cfg.problem(an.sobol_names)
        xs_sub = sobol_sample.sample(sub, cfg.samples, calc_second_order=False, seed=cfg.seed)
        idx = [names.index(n) for n in sub["names"]]
        xs = np.tile(nominal, (len(xs_sub), 1))
        xs[:, idx] = xs_sub
        _run_rows(store, "sobol", xs, **go)
        for metric in cfg.metrics:
            y = store.y("sobol", len(xs), metric)
            if np.ptp(y) == 0:  # no variance: every index is 0 by definition
                an.sobol[metric] = {n: dict(S1=0.0, S1_conf=0.0, ST=0.0, ST_conf=0.0)
                                    for n in sub["names"]}
                continue
            with np.errstate(all="ignore"):
                res = sobol_analyze.analyze(sub, y, calc_second_order=False,
                                            seed=_analysis_seed(cfg), print_to_console=False)
            an.sobol[metric] = {n: {k: float(res[k][i]) for k in ("S1", "S1_conf", "ST", "ST_conf")}
                                for i, n in enumerate(sub["names"])}
        phases.append(("sobol", len(xs)))

    # 3. One at a time: the nominal world, then each top parameter at its low and high end
    oat_names = top_parameters(an, cfg.metrics, cfg.tornado_top, per_metric=True)
    xo = [nominal.copy()]
    for n in oat_names:
        i = names.index(n)
        for end in (2, 3):
            x = nominal.copy()
            x[i] = cfg.parameters[i][end]
            xo.append(x)
    xo = np.array(xo)
    _run_rows(store, "oat", xo, **go)
    phases.append(("oat", len(xo)))
    for metric in cfg.metrics:
        y = store.y("oat", len(xo), metric)
        an.nominal[metric] = float(y[0])
        an.oat[metric] = {n: (float(y[1 + 2 * k]), float(y[2 + 2 * k]))
                          for k, n in enumerate(oat_names)}
        an.worlds[metric] = np.concatenate([store.y(p, n, metric) for p, n in phases])
    write_outputs(an, store.out)
    return an


def _analysis_seed(cfg: SensitivityConfig) -> int:
    # SALib's Morris analysis treats a seed of 0 as "no seed" (global random state) for its
    # bootstrap intervals; never pass 0, so that reruns and resumed runs write identical tables.
    return cfg.seed + 1


def top_parameters(an: Analysis, metrics: Sequence[str], k: int, per_metric: bool = False) -> list[str]:
    """Parameters with the largest Morris mu_star.

    ``per_metric``: the union of each metric's top ``k``; otherwise the ``k`` with the largest
    mu_star relative to the metric's largest, over ``metrics`` (so that a ratio in x and a share
    in [0, 1] weigh alike).
    """
    if per_metric:
        out: list[str] = []
        for m in metrics:
            for n in an.ranking(m)[:k]:
                if _finite(an.morris[m][n]["mu_star"]) > 0 and n not in out:
                    out.append(n)
        return out
    score: dict[str, float] = {}
    for m in metrics:
        top = max((_finite(v["mu_star"]) for v in an.morris[m].values()), default=0.0)
        for n, v in an.morris[m].items():
            rel = _finite(v["mu_star"]) / top if top > 0 else 0.0
            score[n] = max(score.get(n, 0.0), rel)
    return sorted(score, key=lambda n: (-score[n], n))[:k]


# ----------------------------------------------------------------------------------------------
# Outputs

CSV_COLUMNS = ["parameter", "metric", "mu_star", "mu_star_conf", "sigma", "mu", "S1", "S1_conf",
               "ST", "ST_conf", "low_end_value", "high_end_value", "nominal_value", "mode",
               "low", "high"]
LABELS = {"qlearning_near_optimal": "Q-learner's near-optimal rate (share of requests)",
          "oracle_vs_cpu": "oracle efficiency vs mobile CPU (x, geometric mean over cells)",
          "oracle_vs_cloud": "oracle efficiency vs cloud (x, geometric mean over cells)",
          "state_ceiling": "state ceiling (share of requests)"}


def write_outputs(an: Analysis, out: Path) -> None:
    """``sensitivity.csv``, the tornado PNGs and ``sensitivity.md``."""
    cfg = an.cfg
    rows = []
    for metric in cfg.metrics:
        for n in an.ranking(metric):
            p = next(p for p in cfg.parameters if p[0] == n)
            mo, so = an.morris[metric][n], an.sobol.get(metric, {}).get(n, {})
            lo_hi = an.oat.get(metric, {}).get(n)
            rows.append({"parameter": n, "metric": metric, **{k: mo[k] for k in mo},
                         **{k: so.get(k, "") for k in ("S1", "S1_conf", "ST", "ST_conf")},
                         "low_end_value": lo_hi[0] if lo_hi else "",
                         "high_end_value": lo_hi[1] if lo_hi else "",
                         "nominal_value": an.nominal[metric], "mode": p[1], "low": p[2],
                         "high": p[3]})
    _atomic_csv(out / "sensitivity.csv", CSV_COLUMNS, rows)
    write_tornados(an, out)
    atomic_write(out / "sensitivity.md", report(an))


def _atomic_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()}
                for r in rows)
    atomic_write(path, buf.getvalue().encode("utf-8"))  # bytes: the csv module's own line ends


def _slug(metric: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", metric.lower()).strip("_")


def write_tornados(an: Analysis, out: Path, top: int | None = None) -> list[Path]:
    """One tornado PNG per metric, and the two headline ratios side by side."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figures; pip install 'autoscale-env[plots]'",
              file=sys.stderr)
        return []
    written = []
    for metric in an.cfg.metrics:
        fig = tornado_figure(plt, an, metric, top)
        written.append(_save(fig, out / f"tornado_{_slug(metric)}.png"))
        plt.close(fig)
    fig, axes = plt.subplots(2, 1, figsize=(9, 0.9 * an.cfg.tornado_top + 3))
    for ax, metric in zip(axes, ("oracle_vs_cpu", "oracle_vs_cloud")):
        _tornado(ax, an, metric, top)
    fig.tight_layout()
    written.append(_save(fig, out / "tornado_headline.png"))
    plt.close(fig)
    return written


def tornado_figure(plt, an: Analysis, metric: str, top: int | None = None):
    """One metric's tornado (not saved): each parameter at its low and high end, one at a time."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * an.cfg.tornado_top + 2.0))
    _tornado(ax, an, metric, top)
    fig.tight_layout()
    return fig


def _tornado(ax, an: Analysis, metric: str, top: int | None) -> None:
    names = [n for n in an.ranking(metric) if n in an.oat.get(metric, {})][:top or an.cfg.tornado_top]
    nominal = an.nominal[metric]
    names = names[::-1]  # largest mu_star at the top
    for y, n in enumerate(names):
        lo, hi = an.oat[metric][n]
        ax.barh(y, lo - nominal, left=nominal, color="tab:blue", height=0.6,
                label="parameter at its low end" if y == 0 else None)
        ax.barh(y, hi - nominal, left=nominal, color="tab:orange", height=0.6, alpha=0.85,
                label="parameter at its high end" if y == 0 else None)
    ax.axvline(nominal, color="black", lw=0.8)
    ax.set_yticks(range(len(names)),
                  [f"{n}  (mu*={an.morris[metric][n]['mu_star']:.3g})" for n in names], fontsize=8)
    ax.set_xlabel(LABELS.get(metric, metric))
    ax.set_title(f"{metric}: data value {nominal:.3g}; top {len(names)} by Morris mu*", fontsize=10)
    if names:
        # outside the axes, under the x label: inside ("best") it sat on the longest bars.
        # The offset is in inches (tick labels and x label), whatever the axes' height.
        from matplotlib.transforms import ScaledTranslation
        below = ax.transAxes + ScaledTranslation(0, -0.55, ax.figure.dpi_scale_trans)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                  bbox_transform=below, ncol=2, frameon=False)


def _save(fig, path: Path) -> Path:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))


def _fmt(metric: str, v: float) -> str:
    if metric.startswith("share:") or metric in ("state_ceiling", QLEARNING_METRIC):
        return f"{100 * v:.1f} %"
    return f"{v:.2f}x"


def report(an: Analysis) -> str:
    """``sensitivity.md``: what holds over the whole range, what hinges on which estimate."""
    cfg = an.cfg
    n_numbers = sum(_count(p[0]) for p in cfg.parameters)
    n_worlds = len(next(iter(an.worlds.values())))
    lines = [
        "# Sensitivity of the results to the world's estimates", "",
        f"{len(cfg.parameters)} parameters cover the {n_numbers} numbers the data marks as "
        f"estimates (`autoscale sensitivity --list`). {n_worlds} worlds evaluated "
        f"(Morris: {cfg.trajectories} trajectories"
        + (f"; Sobol: {cfg.samples} base samples over the top {len(an.sobol_names)}" if an.sobol else "")
        + f"; one-at-a-time ends of the top {cfg.tornado_top} per metric). Each world: "
        f"{len(cfg.cells)} cells x {cfg.episodes} episodes of the same requests "
        f"(seed {cfg.seed}), the oracle's decisions scored against always-{MOBILE_CPU_TARGET} and "
        f"always-{CLOUD_TARGET}; ratios are geometric means over cells.", "",
        "## Conclusions", ""]
    for metric in HEADLINE_METRICS:
        lines.append(_conclusion(an, metric))
    if QLEARNING_METRIC in cfg.metrics:
        v = an.worlds[QLEARNING_METRIC]
        lines.append(f"- **Q-learner's near-optimal rate** ({cfg.qlearning_steps} training requests "
                     f"per cell): data value {_fmt(QLEARNING_METRIC, an.nominal[QLEARNING_METRIC])}, "
                     f"{_fmt(QLEARNING_METRIC, float(v.min()))} to "
                     f"{_fmt(QLEARNING_METRIC, float(v.max()))} over the evaluated worlds; moved "
                     f"most by {_top3(an, QLEARNING_METRIC)}.")
    shares = [m for m in cfg.metrics if m.startswith("share:")]
    nominal_top = max(shares, key=lambda m: an.nominal[m])
    stacked = np.stack([an.worlds[m] for m in shares])
    still = float(np.mean(np.argmax(stacked, axis=0) == shares.index(nominal_top)))
    lines.append(
        f"- **The oracle's most used target** with the data's values is `{nominal_top[6:]}` "
        f"({_fmt(nominal_top, an.nominal[nominal_top])} of decisions); it stays the most used in "
        f"{100 * still:.0f} % of the evaluated worlds"
        + (" (robust)." if still >= 0.95 else f" (fragile: {_top3(an, nominal_top)} decide it)."))
    lines += [""]
    for metric in HEADLINE_METRICS:
        names = an.ranking(metric)[:3]
        lines.append(f"The three estimates that move the {LABELS[metric].split(' (')[0]} most "
                     "(Morris mu*): " + ", ".join(f"{i}. `{n}`" for i, n in enumerate(names, 1)) + ".")
    lines += ["", "## Which estimates matter most", "",
              "Top five parameters per headline metric by Morris mu* (mean absolute elementary "
              "effect over each parameter's range, in the metric's units; +- its 95 % bootstrap "
              "interval); sigma large against mu* means the effect depends on other parameters."
              + (" S1 / ST: first-order and total Sobol indices (share of the metric's variance "
                 "over the Sobol parameters)." if an.sobol else ""), ""]
    head = "| metric | rank | parameter | mu* | sigma | low end -> high end |" + (
        " S1 | ST |" if an.sobol else "")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for metric in HEADLINE_METRICS:
        for rank, n in enumerate(an.ranking(metric)[:5], 1):
            mo = an.morris[metric][n]
            ends = an.oat[metric].get(n)
            row = (f"| {metric} | {rank} | `{n}` | {mo['mu_star']:.3g} +- {mo['mu_star_conf']:.2g} | "
                   f"{mo['sigma']:.3g} | "
                   + (f"{_fmt(metric, ends[0])} -> {_fmt(metric, ends[1])}" if ends else "") + " |")
            if an.sobol:
                s = an.sobol[metric].get(n)
                row += (f" {s['S1']:.2f} +- {s['S1_conf']:.2f} | {s['ST']:.2f} +- {s['ST_conf']:.2f} |"
                        if s else " - | - |")
            lines.append(row)
    lines += ["", "The full table is `sensitivity.csv`; `tornado_<metric>.png` shows each top "
              "parameter's one-at-a-time swing (blue: its low end, orange: its high end).", ""]
    return "\n".join(lines) + "\n"


def _count(name: str) -> int:
    return next((e.count for e in enumerate_estimates() if e.name == name), 1)


def _top3(an: Analysis, metric: str) -> str:
    return ", ".join(f"`{n}`" for n in an.ranking(metric)[:3])


def _conclusion(an: Analysis, metric: str) -> str:
    v = an.worlds[metric]
    lo, hi = float(v.min()), float(v.max())
    p5, p95 = (float(x) for x in np.percentile(v, [5, 95]))
    nominal = an.nominal[metric]
    span = f"data value {_fmt(metric, nominal)}, {_fmt(metric, lo)} to {_fmt(metric, hi)} over the " \
           f"evaluated worlds (5-95 %: {_fmt(metric, p5)} to {_fmt(metric, p95)})"
    top = _top3(an, metric)
    if metric == "state_ceiling":
        robust = hi - lo <= 0.10
        verdict = (f"robust within {100 * (hi - lo):.0f} points" if robust
                   else f"fragile: it moves {100 * (hi - lo):.0f} points, mostly with {top}")
        return f"- **State ceiling**: {span}; {verdict}."
    what = "the mobile CPU" if metric == "oracle_vs_cpu" else "the cloud"
    if lo > 1.0:
        verdict = (f"**robust**: the oracle beats {what} by at least {lo:.2f}x in every one of "
                   f"the {len(v)} evaluated worlds (the Morris grid reaches each parameter's ends)"
                   + ("" if hi / lo <= 2 else f"; by how much varies {hi / lo:.1f}-fold, mostly "
                                              f"with {top}"))
    else:
        worse = float(np.mean(v <= 1.0))
        verdict = (f"**fragile**: in {100 * worse:.0f} % of the evaluated worlds the oracle does not "
                   f"beat {what}; it hinges on {top}")
    return f"- **Oracle vs {what}**: {span}; {verdict}."


# ----------------------------------------------------------------------------------------------
# Command line


def list_parameters(estimates: Sequence[Estimate]) -> str:
    """The parameter table ``--list`` prints."""
    lines = [f"{len(estimates)} parameters over {sum(e.count for e in estimates)} estimated numbers",
             "", "| parameter | numbers | mode | range |", "|---|---|---|---|"]
    lines += [f"| {e.name} | {e.count} | {e.mode} | [{e.low:g}, {e.high:g}] |" for e in estimates]
    return "\n".join(lines) + "\n"


QUICK = dict(trajectories=4, samples=32, sobol_top=2, tornado_top=10, episodes=12)
FULL = dict(trajectories=10, samples=128, sobol_top=3, tornado_top=10, episodes=40)


def run_from_options(*, method: str = "sobol", quick: bool = False, devices: Sequence[str] = DEVICES,
                     scenarios: Sequence[str] = SCENARIOS, settings: Sequence[str] = SETTINGS,
                     features: str = "paper", qlearning_steps: int = 0, seed: int = 0,
                     engine: str = "local", workers: int | None = None, address: str | None = None,
                     out: str | Path = "runs/sensitivity", force: bool = False,
                     progress: bool = True, samples: int | None = None,
                     trajectories: int | None = None, sobol_top: int | None = None,
                     tornado_top: int | None = None, episodes: int | None = None,
                     force_workers: bool = False) -> str:
    """``autoscale sensitivity``: the design from the options (``None``: the ``FULL`` or, with
    ``quick``, the ``QUICK`` value), the run, and the report text to print."""
    try:
        import SALib  # noqa: F401
    except ImportError:
        raise DependencyMissing("SALib", "sensitivity", "autoscale sensitivity") from None
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    estimates = enumerate_estimates()
    chosen = {"samples": samples, "trajectories": trajectories, "sobol_top": sobol_top,
              "tornado_top": tornado_top, "episodes": episodes}
    base = QUICK if quick else FULL
    opts = {k: (chosen[k] if chosen[k] is not None else v) for k, v in base.items()}
    cells = grid_cells(list(devices), list(scenarios), list(settings))
    cfg = make_config(method=method, cells=cells, seed=seed, features=features,
                      qlearning_steps=qlearning_steps, estimates=estimates, **opts)
    print(f"{len(cfg.parameters)} parameters over {sum(e.count for e in estimates)} estimated "
          f"numbers; {len(cells)} cells x {cfg.episodes} episodes per world", flush=True)
    t0 = time.perf_counter()
    an = run(cfg, out, engine=engine,
             workers=workers if workers is not None else (os.cpu_count() or 1), address=address,
             force=force, progress=progress, force_workers=force_workers)
    out = Path(out)
    return ((out / "sensitivity.md").read_text() + "\n"
            f"{len(next(iter(an.worlds.values())))} worlds, {time.perf_counter() - t0:.0f} s this "
            f"run; results: {out / 'sensitivity.csv'}, figures: {out}/tornado_*.png")
