"""The standard protocol ``autoscale-bench-v1``: fixed cells, budgets and seeds, a normalised score,
stored reference results, a regression check and a leaderboard.

The protocol is data (``agents/data/protocol_v1.toml``); this module runs it over the benchmark
harness (:func:`agents.experiments.benchmark.run` into one
:class:`~agents.experiments.benchmark.ResultStore` per entry) and scores the rows:

* :func:`run_protocol` runs any agent (a name of ``agents.AGENTS`` or ``module:Class``) on the full
  grid or the quick subset, beside the score's anchors (oracle, mobile CPU, cloud), writes
  ``protocol.json`` (the file a result is submitted with) and returns the report that puts the
  agent's row beside the stored reference table.
* :func:`regenerate` reruns the reference entries and rewrites ``agents/data/expected_v1.json``.
* :func:`check` reruns the quick protocol for the cheap reference entries and names every score
  that left its stored interval (the CI regression check).
* :func:`verify` reruns the quick protocol for a submitted ``protocol.json``.
* :func:`write_leaderboard` writes the leaderboard table into ``docs/benchmarks.md`` and its figure.

The normalised score (:func:`normalised_score`) is argued in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import statistics
import tempfile
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import agents
from agents.experiments import benchmark
from agents.experiments.benchmark import (
    BenchmarkConfig,
    ResultStore,
    Task,
    geometric_mean,
    mean_ci,
    summarize,
)
from autoscale_env import version
from autoscale_env.world import config as world_config
from autoscale_env.world.errors import AutoScaleError, UnknownNameError
from autoscale_env.world.files import atomic_write

DATA_DIR = Path(agents.__file__).resolve().parent / "data"
PROTOCOL_FILE = DATA_DIR / "protocol_v1.toml"
EXPECTED_FILE = DATA_DIR / "expected_v1.json"
#: The command that rewrites the stored expected scores (named in every check failure).
REGENERATE_COMMAND = "autoscale protocol --regenerate"
VARIANTS = ("quick", "full")

#: Raw metrics kept per cell beside the score: name -> how seeds and cells are averaged.
#: Efficiency ratios are averaged geometrically (a few extreme cells must not dominate), rates
#: and energies arithmetically.
METRICS = {
    "energy_mj": "mean",
    "ppw_vs_cpu": "geometric",
    "ppw_vs_cloud": "geometric",
    "qos_violation_rate": "mean",
    "accuracy_violation_rate": "mean",
    "oracle_match": "mean",
    "near_optimal_rate": "mean",
}


class ProtocolError(AutoScaleError, ValueError):
    """The protocol file, an expected-results file or a submitted result is invalid."""


# ----------------------------------------------------------------------------------------------
# The protocol as data


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: phone x scenario x setting."""

    device: str
    scenario: str
    setting: str

    @property
    def key(self) -> str:
        return f"{self.device}/{self.scenario}/{self.setting}"

    @classmethod
    def parse(cls, key: str, where: str) -> Cell:
        parts = key.split("/")
        if len(parts) != 3:
            raise ProtocolError(f"{where}: cell {key!r} must be DEVICE/SCENARIO/SETTING")
        return cls(*parts)


@dataclass(frozen=True)
class Entry:
    """One row of the protocol's results: an agent with its state bins and hyperparameters."""

    name: str
    agent: str
    features: str = "paper"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    ci: bool = False
    cells: str = "all"
    """``all`` (the variant's cells) or ``quick`` (the quick cells, with every training seed)."""

    @property
    def slug(self) -> str:
        """A directory name for the entry's result store."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)

    def config(self, protocol: Protocol) -> BenchmarkConfig:
        """The benchmark configuration of this entry under ``protocol``."""
        env_kwargs: dict[str, Any] = {}
        if self.features != "paper":
            features = self.features
            if features not in world_config.FEATURE_SETS:
                features = str(Path(features).resolve())
            env_kwargs["features"] = features
        return BenchmarkConfig(
            train_steps=protocol.train_steps, eval_steps=protocol.eval_steps,
            hyperparameters={self.agent: dict(self.hyperparameters)} if self.hyperparameters else {},
            env_kwargs=env_kwargs)

    def describe(self) -> dict[str, Any]:
        return {"agent": self.agent, "features": self.features,
                "hyperparameters": dict(self.hyperparameters)}


@dataclass(frozen=True)
class Protocol:
    """A loaded, validated protocol file (see ``agents/data/protocol_v1.toml``)."""

    name: str
    version: int
    train_steps: int
    eval_steps: int
    train_seeds: tuple[int, ...]
    eval_offset: int
    cells: tuple[Cell, ...]
    quick_cells: tuple[Cell, ...]
    quick_seeds: tuple[int, ...]
    cpu: str
    cloud: str
    oracle: str
    score_floor: float
    score_tolerance: float
    energy_rel_tolerance: float
    references: tuple[Entry, ...]
    path: Path

    @property
    def anchors(self) -> tuple[str, str, str]:
        """The score's anchor agents: mobile CPU, cloud, oracle."""
        return (self.cpu, self.cloud, self.oracle)

    def anchor_entries(self) -> list[Entry]:
        return [Entry(name=a, agent=a) for a in self.anchors]

    def reference(self, name: str) -> Entry:
        for e in self.references:
            if e.name == name:
                return e
        raise UnknownNameError("reference entry", name, [e.name for e in self.references])

    def grid(self, variant: str, entry: Entry | None = None) -> tuple[list[Cell], list[int]]:
        """The cells and training seeds of ``variant`` (``quick`` or ``full``) for ``entry``."""
        if variant not in VARIANTS:
            raise UnknownNameError("protocol variant", variant, VARIANTS)
        if variant == "quick":
            return list(self.quick_cells), list(self.quick_seeds)
        if entry is not None and entry.cells == "quick":
            return list(self.quick_cells), list(self.train_seeds)
        return list(self.cells), list(self.train_seeds)


def load_protocol(path: str | Path | None = None) -> Protocol:
    """Read and validate a protocol file (default: ``autoscale-bench-v1``)."""
    file = Path(path) if path else PROTOCOL_FILE
    try:
        with open(file, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ProtocolError(f"{file}: unreadable protocol file ({e})") from None

    def get(table: str, key: str, kind: type | tuple[type, ...]) -> Any:
        where = doc if not table else doc.get(table)
        if not isinstance(where, dict) or key not in where:
            raise ProtocolError(f"{file}: missing field {table + '.' if table else ''}{key}")
        value = where[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise ProtocolError(f"{file}: field {table + '.' if table else ''}{key} has the wrong "
                                f"type: {value!r}")
        return value

    train_seeds = tuple(get("seeds", "train", list))
    eval_offset = get("seeds", "eval_offset", int)
    if eval_offset != benchmark.EVAL_SEED_OFFSET:
        raise ProtocolError(f"{file}: seeds.eval_offset = {eval_offset}, but the harness evaluates "
                            f"at EVAL_SEED_OFFSET = {benchmark.EVAL_SEED_OFFSET} + training seed")
    if not train_seeds or any(not isinstance(s, int) or s < 0 for s in train_seeds):
        raise ProtocolError(f"{file}: seeds.train must be non-negative integers, got {train_seeds}")
    if set(train_seeds) & {eval_offset + s for s in train_seeds}:
        raise ProtocolError(f"{file}: training and evaluation seeds overlap")
    devices = get("grid", "devices", list)
    scenarios = get("grid", "scenarios", list)
    settings = get("grid", "settings", list)
    cells = tuple(Cell(d, sc, st) for d in devices for sc in scenarios for st in settings)
    quick_cells = tuple(Cell.parse(k, f"{file}: quick.cells") for k in get("quick", "cells", list))
    for c in quick_cells:
        if c not in cells:
            raise ProtocolError(f"{file}: quick cell {c.key} is not a cell of the grid")
    quick_seeds = tuple(get("quick", "seeds", list))
    if not set(quick_seeds) <= set(train_seeds):
        raise ProtocolError(f"{file}: quick.seeds {list(quick_seeds)} must be training seeds "
                            f"{list(train_seeds)}")
    refs = []
    for i, raw in enumerate(doc.get("reference", [])):
        unknown = set(raw) - {"name", "agent", "features", "hyperparameters", "ci", "cells"}
        if unknown or "name" not in raw or "agent" not in raw:
            raise ProtocolError(f"{file}: reference[{i}] needs name and agent, and may have "
                                f"features, hyperparameters, ci, cells; got {sorted(raw)}")
        if raw.get("cells", "all") not in ("all", "quick"):
            raise ProtocolError(f"{file}: reference[{i}].cells must be 'all' or 'quick', got "
                                f"{raw['cells']!r}")
        refs.append(Entry(raw["name"], raw["agent"], raw.get("features", "paper"),
                          dict(raw.get("hyperparameters", {})), bool(raw.get("ci", False)),
                          raw.get("cells", "all")))
    names = [e.name for e in refs]
    if len(set(names)) != len(names):
        raise ProtocolError(f"{file}: reference names must be unique, got {names}")
    protocol = Protocol(
        name=get("", "name", str), version=get("", "version", int),
        train_steps=get("budget", "train_steps", int), eval_steps=get("budget", "eval_steps", int),
        train_seeds=train_seeds, eval_offset=eval_offset, cells=cells, quick_cells=quick_cells,
        quick_seeds=quick_seeds, cpu=get("score", "cpu", str), cloud=get("score", "cloud", str),
        oracle=get("score", "oracle", str),
        score_floor=float(get("score", "floor", (int, float))),
        score_tolerance=float(get("check", "score_tolerance", (int, float))),
        energy_rel_tolerance=float(get("check", "energy_rel_tolerance", (int, float))),
        references=tuple(refs), path=file)
    for anchor in protocol.anchors:
        if anchor not in names:
            raise ProtocolError(f"{file}: the score anchor {anchor!r} must be a reference entry")
    return protocol


# ----------------------------------------------------------------------------------------------
# The normalised score


def penalised_energy_mj(energy_mj: float, qos_violation_rate: float,
                        accuracy_violation_rate: float, violation_cost_mj: float) -> float:
    """Energy per request with every violation charged ``violation_cost_mj`` (a request that
    misses its latency and its accuracy target is charged twice)."""
    return energy_mj + violation_cost_mj * (qos_violation_rate + accuracy_violation_rate)


def normalised_score(agent: Sequence[float], cpu: Sequence[float], cloud: Sequence[float],
                     oracle: Sequence[float], floor: float | None = None) -> float:
    """The protocol's score of one (cell, seed): 0 = the better fixed baseline, 100 = the oracle.

    Each argument is ``(energy_mj, qos_violation_rate, accuracy_violation_rate)`` measured on the
    same evaluation requests. A violation is charged the mean energy per request of the cheaper
    fixed baseline, ``w = min(E_cpu, E_cloud)`` (as if the request had to be served again), giving
    a penalised energy ``C = E + w (q + a)``; then, with ``C0`` the smaller of the two baselines'
    ``C``::

        score = 100 (C0 - C_agent) / (C0 - C_oracle)

    NaN when the oracle does not beat the better baseline (nothing to normalise by). Negative:
    worse than always running on the better fixed target; ``floor`` (the protocol's -100) bounds
    it from below so one cell with little room cannot dominate a mean over cells.
    """
    w = min(cpu[0], cloud[0])
    c0 = min(penalised_energy_mj(*cpu, w), penalised_energy_mj(*cloud, w))
    c_oracle = penalised_energy_mj(*oracle, w)
    room = c0 - c_oracle
    if not room > 1e-9 * max(abs(c0), 1e-12):
        return float("nan")
    score = 100.0 * (c0 - penalised_energy_mj(*agent, w)) / room
    return score if floor is None else max(score, floor)


def _triple(row: dict[str, Any]) -> tuple[float, float, float]:
    return (float(row["energy_mj"]), float(row["qos_violation_rate"]),
            float(row["accuracy_violation_rate"]))


def score_rows(rows: Iterable[dict[str, Any]], anchors: dict[tuple[str, int], dict[str, dict]],
               protocol: Protocol) -> list[dict[str, Any]]:
    """The rows with a ``score`` column, from the anchor rows of the same (cell, seed).

    Refuses (:class:`ProtocolError`) a row whose evaluation requests were not the anchors' (its
    counterfactual mobile-CPU energy differs), since the score would compare different requests.
    """
    out = []
    for r in rows:
        key = (f"{r['device']}/{r['scenario']}/{r['setting']}", int(r["seed"]))
        a = anchors.get(key)
        if a is None or any(n not in a for n in protocol.anchors):
            raise ProtocolError(f"no anchor results ({', '.join(protocol.anchors)}) for cell "
                                f"{key[0]} seed {key[1]}")
        cpu_mj = float(r["energy_mj"]) * float(r["ppw_vs_cpu"])
        anchor_cpu_mj = float(a[protocol.cpu]["energy_mj"])
        if not math.isclose(cpu_mj, anchor_cpu_mj, rel_tol=1e-9):
            raise ProtocolError(
                f"{r['agent']} on {key[0]} seed {key[1]} was evaluated on other requests than the "
                f"anchors (mobile-CPU energy {cpu_mj!r} mJ vs {anchor_cpu_mj!r} mJ); an agent's "
                "env_kwargs must not change the request stream")
        score = normalised_score(_triple(r), _triple(a[protocol.cpu]), _triple(a[protocol.cloud]),
                                 _triple(a[protocol.oracle]), protocol.score_floor)
        out.append({**r, "score": score})
    return out


def _aggregate(values: list[float], how: str) -> float:
    values = [v for v in values if v == v]
    if not values:
        return float("nan")
    return geometric_mean(values) if how == "geometric" else statistics.fmean(values)


def _num(x: float) -> float | None:
    """JSON has no NaN: None stands for it."""
    return None if x != x else round(x, 12)


def _unnum(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def entry_result(scored: list[dict[str, Any]], entry: Entry) -> dict[str, Any]:
    """Per cell (scores per seed, mean ± 95 % interval over seeds, raw metrics) and overall (mean
    score over cells with its interval over seeds; ratios geometric, rates arithmetic)."""
    by_cell: dict[str, list[dict]] = defaultdict(list)
    for r in scored:
        by_cell[f"{r['device']}/{r['scenario']}/{r['setting']}"].append(r)
    cells = {}
    for key in sorted(by_cell):
        rs = sorted(by_cell[key], key=lambda r: int(r["seed"]))
        scores = [float(r["score"]) for r in rs]
        finite = [s for s in scores if s == s]
        mean, half = mean_ci(finite) if finite else (float("nan"), float("nan"))
        cells[key] = {
            "seeds": [int(r["seed"]) for r in rs],
            "score": [_num(s) for s in scores],
            "score_mean": _num(mean), "score_ci95": _num(half),
            "metrics": {m: _num(_aggregate([float(r[m]) for r in rs], how))
                        for m, how in METRICS.items()},
        }
    # overall: per seed, the mean score over cells; then mean ± interval over seeds
    per_seed: dict[int, list[float]] = defaultdict(list)
    for r in scored:
        if float(r["score"]) == float(r["score"]):
            per_seed[int(r["seed"])].append(float(r["score"]))
    seed_means = [statistics.fmean(v) for _, v in sorted(per_seed.items())]
    mean, half = mean_ci(seed_means) if seed_means else (float("nan"), float("nan"))
    overall = {"cells": len(cells), "score_mean": _num(mean), "score_ci95": _num(half),
               "metrics": {m: _num(_aggregate([float(r[m]) for r in scored], how))
                           for m, how in METRICS.items()}}
    return {**entry.describe(), "cells": cells, "overall": overall}


# ----------------------------------------------------------------------------------------------
# Running


def resolve_agent(spec: str) -> type:
    """The class behind an agent name or a ``module:Class`` import path (``agents.agent_class``);
    it is built as ``Class(env, seed=..., **hyperparameters)`` (``agents.base.Agent``)."""
    try:
        return agents.agent_class(spec)
    except ImportError as e:
        raise ProtocolError(f"agent {spec!r}: {e}; give a zoo name or module:Class with the module "
                            "importable (on PYTHONPATH)") from None


def _command(argv: Sequence[str] | None) -> str:
    """The command line that made a result, without the options that do not change it."""
    if argv is None:
        return "agents.experiments.protocol (library call)"
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--out", "--expected", "--workers"):
            skip = True
        elif a not in ("--quiet", "--force", "--resume") and not a.startswith(
                ("--out=", "--expected=", "--workers=")):
            kept.append(a)
    return " ".join(["autoscale protocol", *(shlex.quote(a) for a in kept)])


def world_sha256() -> str:
    """Content hash of the world's data files (``autoscale_env/data``): results made with another
    world are flagged on the leaderboard."""
    h = hashlib.sha256()
    root = world_config.DATA_DIR
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def run_entries(protocol: Protocol, entries: Sequence[Entry], variant: str, out: Path, *,
                profiles: dict[str, str] | None = None, cells: Sequence[str] | None = None,
                force: bool = False, resume: bool = False, progress: bool = True,
                workers: int = 1) -> dict[str, list[dict[str, Any]]]:
    """Run ``entries`` (plus the score's anchors) on ``variant``; returns scored rows per entry.

    Each entry runs into its own :class:`ResultStore` ``out/<entry>/`` (one benchmark
    configuration per store). ``profiles`` maps a device name to a profile file used in its place
    (the rows keep the name); ``cells`` restricts the run to some cell keys. ``workers > 1`` runs
    each entry's tasks on the sweep's process pool (same rows: a task is a pure function of its
    seed and config; that engine also writes TensorBoard runs).
    """
    profiles = dict(profiles or {})
    by_name = {e.name: e for e in entries}
    for anchor in protocol.anchor_entries():
        by_name.setdefault(anchor.name, anchor)
    for e in by_name.values():
        resolve_agent(e.agent)
        world_config.load_features(None if e.features == "paper" else e.features)
    rows: dict[str, list[dict[str, Any]]] = {}
    for e in by_name.values():
        grid_cells, seeds = protocol.grid(variant, e)
        if cells is not None:
            grid_cells = [c for c in grid_cells if c.key in cells]
        # anchors run on every cell any entry runs on
        if e.name in protocol.anchors:
            grid_cells = sorted({c for x in by_name.values()
                                 for c in protocol.grid(variant, x)[0]
                                 if cells is None or c.key in cells}, key=lambda c: c.key)
            seeds = sorted({s for x in by_name.values() for s in protocol.grid(variant, x)[1]})
        tasks = [Task(e.agent, profiles.get(c.device, c.device), c.scenario, c.setting, s)
                 for c in grid_cells for s in seeds]
        cfg = e.config(protocol)
        with ResultStore(out / e.slug, force=force, resume=resume, config=cfg) as store:
            # no TensorBoard runs: the protocol's output is its tables (and they would double
            # the time of a non-learning entry)
            if workers > 1:
                from agents.experiments.sweep import run_local
                run_local(tasks, cfg, store, workers=workers, progress=progress)
            else:
                benchmark.run(tasks, cfg, store, progress=progress, tensorboard=False)
            back = {v: k for k, v in profiles.items()}
            wanted = {(t.device, t.scenario, t.setting, t.seed) for t in tasks}
            got = [r for r in store.read("results")
                   if (r["device"], r["scenario"], r["setting"], int(r["seed"])) in wanted]
            for r in got:
                r["device"] = back.get(r["device"], r["device"])
                r["agent"] = e.name
            benchmark.finish(store, figures=False)
        rows[e.name] = got
    anchors: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for name in protocol.anchors:
        for r in rows[name]:
            anchors[(f"{r['device']}/{r['scenario']}/{r['setting']}", int(r["seed"]))][name] = r
    return {name: score_rows(rs, anchors, protocol) for name, rs in rows.items()}


def results_document(protocol: Protocol, variant: str, entries: Sequence[Entry],
                     scored: dict[str, list[dict]], command: str) -> dict[str, Any]:
    """The JSON document of a protocol run (``protocol.json``: what a result is submitted as)."""
    made_by = {"command": command, "package_version": version.__version__, "world_sha256": world_sha256()}
    doc: dict[str, Any] = {
        "protocol": protocol.name, "version": protocol.version, "variant": variant,
        "budget": {"train_steps": protocol.train_steps, "eval_steps": protocol.eval_steps},
        "made_by": made_by, "agents": {}}
    for e in entries:
        res = entry_result(scored[e.name], e)
        res["config"] = e.config(protocol).fingerprint()
        res["made_by"] = made_by
        doc["agents"][e.name] = res
    return doc


def run_protocol(agent: str, *, quick: bool = False, out: str | Path = "runs/protocol",
                 features: str = "paper", hyperparameters: dict[str, Any] | None = None,
                 name: str | None = None, force: bool = False, resume: bool = False,
                 progress: bool = True, workers: int = 1, protocol: Protocol | None = None,
                 argv: Sequence[str] | None = None) -> tuple[dict[str, Any], str]:
    """Run the protocol for one agent; returns ``(protocol.json document, report)``.

    ``agent`` is a zoo name or ``module:Class``. Writes ``out/protocol.json`` (the agent and the
    score's anchors), ``out/report.md`` (the agent's row beside the stored reference table) and
    one benchmark store per entry (``out/<entry>/results.csv``, ``summary.md``, ``config.json``).
    """
    protocol = protocol or load_protocol()
    variant = "quick" if quick else "full"
    if name is None:  # a zoo agent rerun keeps its reference row beside it under another label
        name = agent if agent not in {e.name for e in protocol.references} else f"{agent} (this run)"
    entry = Entry(name, agent, features, dict(hyperparameters or {}))
    out = Path(out)
    scored = run_entries(protocol, [entry], variant, out, force=force, resume=resume,
                         progress=progress, workers=workers)
    entries = [entry, *(a for a in protocol.anchor_entries() if a.name != entry.name)]
    doc = results_document(protocol, variant, entries, scored, _command(argv))
    atomic_write(out / "protocol.json", json.dumps(doc, indent=1, sort_keys=True) + "\n")
    raw = [r for rs in scored.values() for r in rs]
    report = report_text(doc, entry.name, load_expected(missing_ok=True))
    atomic_write(out / "report.md", report + "\nRaw metrics (benchmark summary):\n\n"
                 + summarize(raw))
    return doc, report


# ----------------------------------------------------------------------------------------------
# Expected results


def load_expected(path: str | Path | None = None, *, missing_ok: bool = False) -> dict[str, Any]:
    """The stored reference results (``expected_v1.json``)."""
    file = Path(path) if path else EXPECTED_FILE
    if missing_ok and not file.exists():
        return {"variants": {}}
    try:
        doc = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ProtocolError(f"{file}: unreadable expected results ({e}); regenerate them: "
                            f"{REGENERATE_COMMAND}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), dict):
        raise ProtocolError(f"{file}: not an expected-results file (no 'variants' table)")
    return doc


def _check_intervals(result: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    """The stored interval of each quick cell: [value - tol, value + tol] (tolerances argued in
    the protocol file's [check] table)."""
    out = {}
    for key, cell in result["cells"].items():
        score = _unnum(cell["score_mean"])
        energy = _unnum(cell["metrics"]["energy_mj"])
        e_tol = abs(energy) * protocol.energy_rel_tolerance
        out[key] = {
            "score": None if score != score else [_num(score - protocol.score_tolerance),
                                                  _num(score + protocol.score_tolerance)],
            "energy_mj": [_num(energy - e_tol), _num(energy + e_tol)],
        }
    return out


def _subset(rows: list[dict], cells: set[str], seeds: set[int]) -> list[dict]:
    return [r for r in rows if f"{r['device']}/{r['scenario']}/{r['setting']}" in cells
            and int(r["seed"]) in seeds]


def regenerate(*, quick: bool = True, names: Sequence[str] | None = None,
               out: str | Path = "runs/protocol-reference", expected_path: str | Path | None = None,
               profiles: dict[str, str] | None = None, cells: Sequence[str] | None = None,
               force: bool = False, resume: bool = False, progress: bool = True,
               workers: int = 1, protocol: Protocol | None = None,
               argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Rerun reference entries (all, or ``names``) and write them into the expected file.

    Entries not rerun keep their stored results and provenance. A full run also rewrites the quick
    variant of the same entries (the quick cells and seeds are a subset with the same budgets).
    ``profiles`` and ``cells`` as for :func:`run_entries` (with ``cells``, the rerun entries hold
    only those cells afterwards).
    """
    protocol = protocol or load_protocol()
    entries = [protocol.reference(n) for n in names] if names else list(protocol.references)
    variant = "quick" if quick else "full"
    scored = run_entries(protocol, entries, variant, Path(out), profiles=profiles, cells=cells,
                         force=force, resume=resume, progress=progress, workers=workers)
    path = Path(expected_path) if expected_path else EXPECTED_FILE
    expected = load_expected(path, missing_ok=True)
    expected.update({"protocol": protocol.name, "version": protocol.version,
                     "regenerate": REGENERATE_COMMAND})
    command = _command(argv)
    quick_cells = {c.key for c in protocol.quick_cells}
    for v in ([variant] if quick else ["full", "quick"]):
        section = expected["variants"].setdefault(v, {"agents": {}})
        if v == variant:
            doc = results_document(protocol, v, entries, scored, command)
        else:  # the quick subset of a full run
            sub = {n: _subset(rs, quick_cells, set(protocol.quick_seeds)) for n, rs in scored.items()}
            doc = results_document(protocol, v, entries, sub, command)
        for e in entries:
            res = doc["agents"][e.name]
            if v == "quick":
                res["check"] = _check_intervals(res, protocol)
            section["agents"][e.name] = res
        order = [e.name for e in protocol.references]
        section["agents"] = dict(sorted(section["agents"].items(),
                                        key=lambda kv: order.index(kv[0])
                                        if kv[0] in order else len(order)))
    atomic_write(path, json.dumps(expected, indent=1) + "\n")
    return expected


# ----------------------------------------------------------------------------------------------
# The regression check and submissions


def compare(actual: dict[str, Any], expected_section: dict[str, Any], names: Iterable[str],
            *, cells: Sequence[str] | None = None) -> list[str]:
    """Messages for every (entry, cell) whose score or energy left its stored interval."""
    failures = []
    how = (f"If the change is deliberate, regenerate the expected scores in the same commit "
           f"(`{REGENERATE_COMMAND} --quick`, or without --quick for the full grid) so the diff "
           f"of agents/data/expected_v1.json shows what moved.")
    for name in names:
        stored = expected_section.get("agents", {}).get(name)
        if stored is None or "check" not in stored:
            failures.append(f"{name}: no stored quick interval. {how}")
            continue
        mine = actual["agents"][name]["cells"]
        for key, interval in stored["check"].items():
            if cells is not None and key not in cells:
                continue
            if key not in mine:
                failures.append(f"{name} on {key}: not run. {how}")
                continue
            now = {"score": _unnum(mine[key]["score_mean"]),
                   "energy_mj": _unnum(mine[key]["metrics"]["energy_mj"])}
            for metric, bounds in interval.items():
                value = now[metric]
                if bounds is None:
                    if value == value:
                        failures.append(f"{name} on {key}: {metric} = {value:.4f}, stored as "
                                        f"undefined (NaN). {how}")
                    continue
                lo, hi = bounds
                centre, half = (lo + hi) / 2, (hi - lo) / 2
                if not (value == value and centre - half <= value <= centre + half):
                    failures.append(
                        f"{name} on {key}: {metric} = {value:.4f} left its stored interval "
                        f"[{centre - half:.4f}, {centre + half:.4f}] (stored {centre:.4f}). {how}")
    return failures


def check(*, names: Sequence[str] | None = None, cells: Sequence[str] | None = None,
          expected_path: str | Path | None = None, profiles: dict[str, str] | None = None,
          out: str | Path | None = None, progress: bool = False,
          protocol: Protocol | None = None) -> list[str]:
    """Run the quick protocol for the ``ci`` reference entries (or ``names``) and return a message
    for every score or energy outside its stored interval (empty: the check passes).

    ``profiles`` replaces device profiles by files (e.g. a perturbed copy), ``cells`` restricts
    the run to some quick cells.
    """
    protocol = protocol or load_protocol()
    entries = [protocol.reference(n) for n in names] if names else \
        [e for e in protocol.references if e.ci]
    expected = load_expected(expected_path)
    with tempfile.TemporaryDirectory(prefix="autoscale-protocol-") as tmp:
        scored = run_entries(protocol, entries, "quick", Path(out) if out else Path(tmp),
                             profiles=profiles, cells=cells, force=out is not None,
                             progress=progress)
    doc = results_document(protocol, "quick", entries, scored, "check")
    return compare(doc, expected["variants"].get("quick", {}), [e.name for e in entries],
                   cells=cells)


def verify(submission: str | Path, *, out: str | Path | None = None, progress: bool = True,
           protocol: Protocol | None = None) -> list[str]:
    """Rerun the quick protocol for a submitted ``protocol.json`` and compare; messages for every
    quick cell that does not reproduce (empty: verified)."""
    protocol = protocol or load_protocol()
    path = Path(submission)
    try:
        doc = json.loads(path.read_text())
        name = next(n for n in doc["agents"] if n not in protocol.anchors)
        described = doc["agents"][name]
    except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
        raise ProtocolError(f"{path}: not a protocol result file ({e!r})") from None
    if (doc.get("protocol"), doc.get("version")) != (protocol.name, protocol.version):
        return [f"{path}: made under {doc.get('protocol')} v{doc.get('version')}, not "
                f"{protocol.name} v{protocol.version}"]
    entry = Entry(name, described["agent"], described.get("features", "paper"),
                  described.get("hyperparameters", {}))
    with tempfile.TemporaryDirectory(prefix="autoscale-verify-") as tmp:
        scored = run_entries(protocol, [entry], "quick", Path(out) if out else Path(tmp),
                             force=out is not None, progress=progress)
    mine = results_document(protocol, "quick", [entry], scored, "verify")
    quick_keys = {c.key for c in protocol.quick_cells}
    claimed = {}
    for key, cell in described["cells"].items():
        if key in quick_keys:
            seeds = cell["seeds"]
            values = [cell["score"][seeds.index(s)] for s in protocol.quick_seeds if s in seeds]
            if len(values) == len(protocol.quick_seeds):
                pseudo = {**cell, "score_mean": statistics.fmean(_unnum(v) for v in values)}
                if len(seeds) != len(values):  # a full-run cell: energy is over all its seeds
                    pseudo["metrics"] = {**cell["metrics"], "energy_mj": None}
                claimed[key] = pseudo
    if not claimed:
        return [f"{path}: holds no result on the quick cells and seeds to verify"]
    stored = {"agents": {name: {"check": _check_intervals({"cells": claimed}, protocol)}}}
    for key in stored["agents"][name]["check"]:
        if claimed[key]["metrics"].get("energy_mj") is None:
            del stored["agents"][name]["check"][key]["energy_mj"]
    return compare(mine, stored, [name], cells=list(claimed))


# ----------------------------------------------------------------------------------------------
# Reports and the leaderboard


def _fmt(mean: float | None, half: float | None = None, digits: int = 1) -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:.{digits}f}"
    return text + (f" ± {half:.{digits}f}" if half else "")


def leaderboard_table(section: dict[str, Any], *, highlight: str | None = None,
                      extra: dict[str, Any] | None = None) -> str:
    """Markdown: one row per agent (overall score and raw metrics), best score first."""
    rows = dict(section.get("agents", {}))
    if extra:
        rows.update(extra)
    head = ("| agent | cells | score (0 = best fixed, 100 = oracle) | eff. vs mobile CPU (x) | "
            "eff. vs cloud (x) | energy/req (mJ) | QoS viol. (%) | acc. viol. (%) | "
            "oracle match (%) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]

    def key(item: tuple[str, dict]) -> float:
        s = item[1]["overall"]["score_mean"]
        return -s if s is not None else math.inf
    for name, res in sorted(rows.items(), key=key):
        o, m = res["overall"], res["overall"]["metrics"]
        pct = {k: None if m[k] is None else 100 * m[k]
               for k in ("qos_violation_rate", "accuracy_violation_rate", "oracle_match")}
        label = f"**{name}** (yours)" if name == highlight else name
        lines.append(
            f"| {label} | {o['cells']} | {_fmt(o['score_mean'], o['score_ci95'])} | "
            f"{_fmt(m['ppw_vs_cpu'], digits=2)} | {_fmt(m['ppw_vs_cloud'], digits=2)} | "
            f"{_fmt(m['energy_mj'])} | {_fmt(pct['qos_violation_rate'])} | "
            f"{_fmt(pct['accuracy_violation_rate'])} | {_fmt(pct['oracle_match'])} |")
    return "\n".join(lines) + "\n"


def cell_table(section: dict[str, Any], *, highlight: str | None = None,
               extra: dict[str, Any] | None = None) -> str:
    """Markdown: score per cell (rows) and agent (columns), mean ± 95 % interval over seeds."""
    rows = dict(section.get("agents", {}))
    if extra:
        rows.update(extra)
    names = ([highlight] if highlight in rows else []) + [n for n in rows if n != highlight]
    keys = sorted({k for r in rows.values() for k in r["cells"]})
    lines = ["| cell | " + " | ".join(f"**{n}**" if n == highlight else n for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for k in keys:
        cells = []
        for n in names:
            c = rows[n]["cells"].get(k)
            cells.append("" if c is None else _fmt(c["score_mean"], c["score_ci95"]))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_text(doc: dict[str, Any], name: str, expected: dict[str, Any]) -> str:
    """The agent's row beside the stored reference table of the same variant."""
    variant = doc["variant"]
    section = expected.get("variants", {}).get(variant, {"agents": {}})
    mine = {name: doc["agents"][name]}
    refs = {k: v for k, v in section.get("agents", {}).items() if k != name}
    head = (f"# {doc['protocol']} ({variant}): {name}\n\nScore per cell: 0 = the better fixed "
            "baseline (mobile CPU or cloud), 100 = the oracle, violations charged (see "
            "docs/benchmarks.md); mean ± 95 % interval over seeds.\n")
    if not refs:
        head += (f"\nNo stored reference results for the {variant} variant yet; regenerate them "
                 f"with `{REGENERATE_COMMAND}{' --quick' if variant == 'quick' else ''}`.\n")
    return (head + "\n" + leaderboard_table({"agents": refs}, highlight=name, extra=mine)
            + "\n" + cell_table({"agents": refs}, highlight=name, extra=mine))


START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


def load_submissions(directory: str | Path | None) -> dict[str, dict[str, Any]]:
    """Submitted results (``protocol.json`` files in ``directory``) per variant, each under the
    label ``"NAME (submitted)"``; files of another protocol version are refused."""
    protocol = load_protocol()
    out: dict[str, dict[str, Any]] = {v: {} for v in VARIANTS}
    if directory is None or not Path(directory).is_dir():
        return out
    for path in sorted(Path(directory).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            names = [n for n in doc["agents"] if n not in protocol.anchors]
            variant = doc["variant"]
            rows = {f"{n} (submitted)": {**doc["agents"][n], "made_by": doc["made_by"]}
                    for n in names}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ProtocolError(f"{path}: not a protocol result file ({e!r})") from None
        if (doc.get("protocol"), doc.get("version")) != (protocol.name, protocol.version) \
                or variant not in VARIANTS:
            raise ProtocolError(f"{path}: made under {doc.get('protocol')} v{doc.get('version')} "
                                f"({variant}), not {protocol.name} v{protocol.version}")
        out[variant].update(rows)
    return out


def leaderboard_markdown(expected: dict[str, Any], figure: str | None,
                         submissions: dict[str, dict[str, Any]] | None = None) -> str:
    """The generated part of docs/benchmarks.md (between the leaderboard markers): per variant,
    the reference entries and any submitted rows, best score first."""
    world = world_sha256()
    submissions = submissions or {}
    out = [START, "", "<!-- generated by `autoscale protocol --leaderboard` from "
           "agents/data/expected_v1.json and docs/results/; do not edit by hand -->", ""]
    for variant in ("full", "quick"):
        section = expected.get("variants", {}).get(variant)
        extra = submissions.get(variant) or {}
        if not section or not section.get("agents"):
            out += [f"**{variant}**: no stored results yet (`{REGENERATE_COMMAND}"
                    f"{' --quick' if variant == 'quick' else ''}`).", ""]
            continue
        made = {json.dumps({k: v for k, v in r["made_by"].items()}, sort_keys=True)
                for r in section["agents"].values()}
        protocol = load_protocol()
        cells, seeds = protocol.grid(variant)
        out += [f"### {expected.get('protocol', '')}, {variant}: {len(cells)} cells x seeds "
                f"{', '.join(map(str, seeds))}", ""]
        if figure and variant == _figure_variant(expected):
            out += [f"![{variant} scores]({figure})", ""]
        out += [leaderboard_table(section, extra=extra), "Score per cell:", "",
                cell_table(section, extra=extra)]
        out.append("Made by:")
        for m in sorted(made):
            d = json.loads(m)
            stale = "" if d.get("world_sha256") == world else \
                " **(another world than the current data: regenerate)**"
            out.append(f"- `{d['command']}`, package {d['package_version']}, world "
                       f"{str(d.get('world_sha256'))[:12]}{stale}")
        for label, r in extra.items():
            d = r["made_by"]
            stale = "" if d.get("world_sha256") == world else " (another world than the current data)"
            out.append(f"- {label}: `{d.get('command')}`, package {d.get('package_version')}, "
                       f"world {str(d.get('world_sha256'))[:12]}{stale}; verified with "
                       "`autoscale protocol --verify` before it was added")
        out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def _figure_variant(expected: dict[str, Any]) -> str:
    full = expected.get("variants", {}).get("full", {}).get("agents")
    return "full" if full else "quick"


def write_figure(expected: dict[str, Any], path: str | Path) -> Path | None:
    """Bar chart of the overall scores (± 95 % interval) of the figure's variant; None without
    matplotlib or results."""
    variant = _figure_variant(expected)
    section = expected.get("variants", {}).get(variant, {}).get("agents", {})
    items = [(n, r["overall"]) for n, r in section.items() if r["overall"]["score_mean"] is not None]
    if not items:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    items.sort(key=lambda kv: kv[1]["score_mean"])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2))
    ax.barh([n for n, _ in items], [o["score_mean"] for _, o in items],
            xerr=[o["score_ci95"] or 0 for _, o in items], color="tab:blue", capsize=3,
            label="mean over cells (± 95 % interval over seeds)")
    for i, (n, _) in enumerate(items):  # the spread over cells behind each mean
        xs = [c["score_mean"] for c in section[n]["cells"].values() if c["score_mean"] is not None]
        ax.plot(xs, [i] * len(xs), "o", color="black", ms=3, alpha=0.6,
                label="one cell" if i == 0 else None)
    ax.legend(loc="lower right", fontsize=7)
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvline(100, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("score: 0 = better fixed baseline, 100 = oracle")
    ax.set_title(f"{expected.get('protocol', '')} ({variant})")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_leaderboard(docs_page: str | Path = "docs/benchmarks.md",
                      figure: str | Path = "docs/leaderboard.png",
                      expected_path: str | Path | None = None,
                      results_dir: str | Path | None = "docs/results") -> str:
    """Write the leaderboard (table and figure) from the stored results and the submitted ones
    (``results_dir``) into ``docs_page``, between its markers (appended if it has none); returns
    the generated Markdown. The figure shows the reference entries."""
    expected = load_expected(expected_path)
    submissions = load_submissions(results_dir)
    page, figure = Path(docs_page), Path(figure)
    made = write_figure(expected, figure)
    rel = None
    if made is not None:
        try:
            rel = str(made.resolve().relative_to(page.resolve().parent))
        except ValueError:
            rel = str(made)
    text = leaderboard_markdown(expected, rel, submissions)
    old = page.read_text() if page.exists() else ""
    if START in old and END in old:
        new = old[: old.index(START)] + text + old[old.index(END) + len(END):].removeprefix("\n")
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + text
    atomic_write(page, new)
    return text


# ----------------------------------------------------------------------------------------------
# Command line
