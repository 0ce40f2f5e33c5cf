"""Fit the state's bin edges to the world: ``autoscale fit-bins`` (and ``scripts/fit_bins.py``).

The state keeps the same seven features as the paper reconstruction (conv, fc, rc layer counts,
co-running CPU and memory, Wi-Fi and Wi-Fi Direct RSSI); only their edges change. The *state
ceiling* of a feature set on a cell is the best oracle match any policy of the state alone could
reach: per state, the share of its most frequent oracle action (``oracle_match_ceiling`` in
results.csv). Starting from the reconstruction's edges, a greedy search adds, one at a time, the
edge (of any feature, from a grid of candidates) that raises the mean ceiling over the training
cells the most, until no edge gains ``min_gain`` or the state count would pass ``max_states``.
The ceiling is then measured on held-out seeds, and the result is written as a features file
(``features="fitted"`` is the bundled one; its header records the command that made it).

Samples come from the public env API (the pending request's context and oracle action), so the
fit sees exactly the requests and oracle an agent sees.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from autoscale_env.world import config, schemas
from autoscale_env.world.config import FeatureSpec
from autoscale_env.world.files import atomic_write
from autoscale_env.world.observation import bin_values
from autoscale_env.world.errors import ConfigError
from autoscale_env.world.observation import MAX_STATES, check_state_space

#: The seven features, in the order of the paper reconstruction.
FIELDS = ("conv", "fc", "rc", "co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm")
#: Seeds of the fit (training) and of the held-out check; disjoint from the benchmark's seeds
#: (0.. for training, 10_000.. for evaluation).
TRAIN_SEED_BASE, HELDOUT_SEED_BASE = 50_000, 60_000
#: Most requests one ``collect`` records (cells x seeds x requests). Each costs ~80 bytes (seven
#: float64 features, the oracle action, the cell index) and the fit keeps a training and a
#: held-out set, plus per-candidate keys of the same length: 4 M rows stay under ~1.5 GB.
MAX_FIT_ROWS = 4_000_000


def check_sizes(n_cells: int, seeds: int, requests: int, max_states: int | None = None) -> None:
    """Refuse sizes that cannot work, or would not fit in memory, before anything is allocated.

    Raises:
        ConfigError: naming the option, its bound and why.
    """
    for name, value in (("--seeds", seeds), ("--requests", requests)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    rows = n_cells * seeds * requests
    if rows > MAX_FIT_ROWS:
        raise ConfigError(
            f"--requests {requests} x --seeds {seeds} x {n_cells} cells = {rows} requests per set, "
            f"over the limit of {MAX_FIT_ROWS} (each costs ~80 bytes, twice: training and held "
            f"out); use fewer requests, seeds or cells")
    if max_states is not None and not 1 <= max_states <= MAX_STATES:
        raise ConfigError(f"--max-states must be in 1..{MAX_STATES} (2**20, the most states a "
                          f"feature set may define), got {max_states}")


@dataclass
class Samples:
    """Raw feature values (N, 7), oracle actions (N,) and the cell index (N,) of each request."""

    raw: np.ndarray
    oracle: np.ndarray
    cell: np.ndarray
    cells: list[tuple[str, str, str]]


def collect(cells: Sequence[tuple[str, str, str]], seeds: Sequence[int], requests: int,
            progress: bool = False) -> Samples:
    """Run each cell for ``requests`` requests per seed, following the oracle, and record the
    pending request's raw features and oracle action."""
    workloads = config.load_workloads()
    layer = {n: (w.conv, w.fc, w.rc) for n, w in workloads.items()}
    raws, oracles, cell_ids = [], [], []
    check_sizes(len(cells), len(seeds), requests)
    total = len(cells) * len(seeds)
    done = 0
    for ci, (device, scenario, setting) in enumerate(cells):
        env = gym.make("AutoScale-v0", device=device, scenario=scenario, setting=setting)
        u = env.unwrapped
        for seed in seeds:
            env.reset(seed=seed)
            rows = np.empty((requests, 7))
            acts = np.empty(requests, dtype=np.int64)
            for i in range(requests):
                ctx = u.context
                rows[i, :3] = layer[ctx["network"]]
                rows[i, 3:] = (ctx["co_cpu_pct"], ctx["co_mem_pct"], ctx["rssi_wifi_dbm"],
                               ctx["rssi_p2p_dbm"])
                a = acts[i] = u.oracle_action()
                _, _, term, trunc, _ = env.step(int(a))
                if term or trunc:
                    env.reset()
            raws.append(rows)
            oracles.append(acts)
            cell_ids.append(np.full(requests, ci))
            done += 1
            if progress:
                print(f"\rsampling {done}/{total}", end="", file=sys.stderr, flush=True)
        env.close()
    if progress:
        print(file=sys.stderr)
    return Samples(np.concatenate(raws), np.concatenate(oracles), np.concatenate(cell_ids),
                   list(cells))


def _bins(field_index: int, edges: Sequence[float], values: np.ndarray) -> np.ndarray:
    spec = FeatureSpec(FIELDS[field_index], FIELDS[field_index], tuple(edges),
                       field_index >= 5, ("",) * (len(edges) + 1))
    return bin_values(spec, values)


def ceilings(samples: Samples, edges: Sequence[Sequence[float]]) -> np.ndarray:
    """State ceiling per cell (fraction) of a feature set given by its edges per field."""
    key = np.zeros(len(samples.oracle), dtype=np.int64)
    for f, e in enumerate(edges):
        key = key * (len(e) + 1) + _bins(f, e, samples.raw[:, f])
    return _ceiling_from_key(samples, key)


def _ceiling_from_key(samples: Samples, key: np.ndarray) -> np.ndarray:
    n_actions = int(samples.oracle.max()) + 1
    _, state = np.unique(key * len(samples.cells) + samples.cell, return_inverse=True)
    counts = np.bincount(state * n_actions + samples.oracle,
                         minlength=(state.max() + 1) * n_actions).reshape(-1, n_actions)
    best = counts.max(axis=1)
    state_cell = np.zeros(state.max() + 1, dtype=np.int64)
    state_cell[state] = samples.cell
    hits = np.bincount(state_cell, weights=best, minlength=len(samples.cells))
    return hits / np.bincount(samples.cell, minlength=len(samples.cells))


def candidates(samples: Samples) -> list[list[float]]:
    """Candidate edges per field: every distinct layer count (above the smallest) for the
    workload fields, 5-point steps (and 0.5: "none") for co-running load, whole dBm for RSSI."""
    out = []
    for f in range(7):
        v = samples.raw[:, f]
        if f < 3:
            out.append([float(x) for x in np.unique(v)[1:]])
        elif f < 5:
            out.append([0.5] + [float(x) for x in range(5, 100, 5)])
        else:
            lo, hi = np.floor(np.percentile(v, 0.5)), np.ceil(np.percentile(v, 99.5))
            out.append([float(x) for x in np.arange(lo, hi + 1)])
    return out


def fit(samples: Samples, start: Sequence[Sequence[float]], *, min_gain: float = 0.001,
        max_states: int = 4096, progress: bool = False) -> tuple[list[list[float]], list[float]]:
    """Greedy forward selection of edges from ``start``; returns (edges per field, the mean
    training ceiling after each added edge)."""
    edges = [sorted(set(float(x) for x in e)) for e in start]
    start_states = check_state_space([len(e) + 1 for e in edges], "the starting features")
    if not 1 <= max_states <= MAX_STATES:
        raise ConfigError(f"--max-states must be in 1..{MAX_STATES}, got {max_states}")
    if max_states < start_states:
        raise ConfigError(f"--max-states {max_states} is below the {start_states} states of the "
                          f"starting features: no edge could be added (start from fewer edges, "
                          f"or raise --max-states)")
    cand = candidates(samples)
    history = [float(ceilings(samples, edges).mean())]
    while True:
        n_states = int(np.prod([len(e) + 1 for e in edges]))
        bins = [_bins(f, e, samples.raw[:, f]) for f, e in enumerate(edges)]
        best = (0.0, -1, 0.0)
        for f in range(7):
            grown = n_states // (len(edges[f]) + 1) * (len(edges[f]) + 2)
            if grown > max_states:
                continue
            # key of every other feature, with this feature's slot left for its new bin index
            for c in cand[f]:
                if c in edges[f]:
                    continue
                trial = sorted(edges[f] + [c])
                key = np.zeros(len(samples.oracle), dtype=np.int64)
                for g in range(7):
                    b = _bins(g, trial, samples.raw[:, g]) if g == f else bins[g]
                    key = key * (len(trial if g == f else edges[g]) + 1) + b
                gain = float(_ceiling_from_key(samples, key).mean()) - history[-1]
                if gain > best[0]:
                    best = (gain, f, c)
        gain, f, c = best
        if f < 0 or gain < min_gain:
            break
        edges[f] = sorted(edges[f] + [c])
        history.append(history[-1] + gain)
        if progress:
            print(f"+ {FIELDS[f]} edge {c:g}: training ceiling {100 * history[-1]:.2f} %",
                  file=sys.stderr, flush=True)
    return edges, history


def _labels(f: int, edges: Sequence[float]) -> list[str]:
    def g(x: float) -> str:
        return f"{x:g}"
    if f >= 5:  # descending: bin 0 is the strongest signal
        e = list(edges)
        out = [f">{g(e[-1])}"] + [f"{g(e[i - 1])}..{g(e[i])}" for i in range(len(e) - 1, 0, -1)]
        return out + [f"<={g(e[0])}"]
    out = [f"<{g(edges[0])}"] + [f"{g(edges[i])}..{g(edges[i + 1])}" for i in range(len(edges) - 1)]
    return out + [f">={g(edges[-1])}"]


def features_toml(edges: Sequence[Sequence[float]], header: str) -> str:
    """A features file (the format of ``data/features.toml``) with these edges."""
    names = ("conv", "fc", "rc", "co_cpu", "co_mem", "rssi_wifi", "rssi_p2p")
    out = [header.rstrip(), ""]
    for f, e in enumerate(edges):
        out += ["[[feature]]", f'name = "{names[f]}"', f'field = "{FIELDS[f]}"',
                f"edges = [{', '.join(f'{x:g}' for x in e)}]"]
        if f >= 5:
            out.append("descending = true")
        out += [f"labels = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in _labels(f, e))}]",
                ""]
    return "\n".join(out)


def edges_of(features: str | None) -> list[list[float]]:
    """Edges per field of a features file or bundled name (in :data:`FIELDS` order)."""
    specs = {s.field: s for s in config.load_features(features)}
    check_state_space([len(s.edges) + 1 for s in specs.values()], f"features {features!r}")
    missing = [f for f in FIELDS if f not in specs]
    if missing:
        raise config.ConfigError(f"features {features!r}: no feature for field(s) {missing}; "
                                 f"fit-bins fits the seven fields {', '.join(FIELDS)}")
    return [list(specs[f].edges) for f in FIELDS]


def fit_and_write(out: str | os.PathLike, *, devices: Sequence[str], scenarios: Sequence[str],
                  settings: Sequence[str], seeds: int = 3, requests: int = 8000,
                  start: str = "paper", min_gain: float = 0.001, max_states: int = 4096,
                  compare: Sequence[str] = ("paper", "per_network"), force: bool = False,
                  progress: bool = True, command: str = "autoscale fit-bins") -> str:
    """``autoscale fit-bins``: fit the edges on training seeds, write the features file ``out``
    (refused if it exists, unless ``force``) and return the held-out ceiling table.

    ``command`` is recorded in the file's header (how it was made)."""
    check_sizes(len(devices) * len(scenarios) * len(settings), seeds, requests, max_states)
    start_states = check_state_space([len(e) + 1 for e in edges_of(start)], f"--start {start}")
    if max_states < start_states:
        raise ConfigError(f"--max-states {max_states} is below the {start_states} states of "
                          f"--start {start}: no edge could be added")
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists (use --force to overwrite)")
    for d in devices:
        config.resolve_device_path(d)
    for s in scenarios:
        config.get_scenario(s)
    for s in settings:
        config.check_setting(s)
    cells = [(d, s, t) for d in devices for s in scenarios for t in settings]
    train_seeds = [TRAIN_SEED_BASE + i for i in range(seeds)]
    held_seeds = [HELDOUT_SEED_BASE + i for i in range(seeds)]
    train = collect(cells, train_seeds, requests, progress)
    held = collect(cells, held_seeds, requests, progress)
    edges, history = fit(train, edges_of(start), min_gain=min_gain, max_states=max_states,
                         progress=progress)
    n_states = int(np.prod([len(e) + 1 for e in edges]))
    sets = {name: edges_of(name) for name in compare}
    sets["fitted"] = edges
    table = {name: ceilings(held, e) for name, e in sets.items()}
    header = (f"# State bins fitted by `autoscale fit-bins` (autoscale_env/tools/fit_bins.py): the "
              f"same\n# seven features as the paper reconstruction (features.toml), edges chosen "
              f"greedily\n# for the highest state ceiling on training seeds "
              f"{train_seeds[0]}..{train_seeds[-1]}\n"
              f"# ({requests} requests per cell and seed) over {len(cells)} cells; {n_states} "
              f"states.\n# Made by: {command}\n"
              f"# Mean state ceiling: training {100 * history[-1]:.1f} %, held-out (seeds "
              f"{held_seeds[0]}..{held_seeds[-1]}) {100 * table['fitted'].mean():.1f} %.\n"
              f"# Edge semantics as in features.toml.")
    text = features_toml(edges, header)
    # the file must load before it replaces anything
    schemas.validate(schemas.FeaturesFile, tomllib.loads(text), out)
    atomic_write(out, text)
    names = list(table)
    lines = [f"wrote {out} ({n_states} states)\n", "Held-out state ceiling (%) per cell:\n",
             "| device | scenario | setting | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for i, (d, s, t) in enumerate(cells):
        lines.append(f"| {d} | {s} | {t} | "
                     + " | ".join(f"{100 * table[n][i]:.1f}" for n in names) + " |")
    lines.append("| mean | | | " + " | ".join(f"{100 * table[n].mean():.1f}" for n in names) + " |")
    return "\n".join(lines)
