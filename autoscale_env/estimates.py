"""The world's estimates, and worlds with them moved: the two adapters of ``autoscale sensitivity``.

Everything the sensitivity analysis knows about the data goes through two functions here, so that a
change of the provenance format or of the simulator's internals is absorbed in this one module:

* :func:`enumerate_estimates` lists every number of the data marked as an estimate, grouped into
  parameters (numbers that move together) with the range each may take.
* :func:`build_world` builds a simulator backend for one cell in which those parameters take given
  values.

Structured provenance first
---------------------------
Where the package has ``autoscale_env.provenance`` (machine-readable ``source``/``sources``/``ranges``
fields next to the values), :func:`enumerate_estimates` takes its estimate entries as they are, one
parameter each (so the count matches ``autoscale provenance``), with their declared ranges
(:func:`from_provenance`). The reader below is the fallback for data without that report.

Interim provenance reader
-------------------------
The data files do not carry machine-readable provenance yet: each table has a free-text ``source``
(``fallback_source`` / ``overhead_source`` cover ``fallback_slowdown`` / ``overhead_ms``). Until a
structured format lands, :func:`enumerate_estimates` reads those strings with these rules:

1. A source is split into clauses at ``;`` outside parentheses. A clause is an *estimate clause*
   when it contains the word ``estimate`` or ``[reconstructed]``.
2. If a clause *starts* with ``estimate``, every number of the table is an estimate.
3. A number is an estimate when an estimate clause names it before the word ``estimate`` (names:
   the key itself, or the aliases in :data:`ALIASES`, e.g. ``busy`` -> ``busy_power_w``,
   ``int8`` -> ``cpu/int8`` and ``dsp/int8`` in a latency row).
4. A number named nowhere takes the status of the source's clauses that name no number: an estimate
   if one of them is an estimate clause, sourced if one is a sourced clause ("TFL-HOSTED Pixel 3;
   gpu/fp32 estimate ..." leaves the other units sourced), and an estimate when every clause names
   something else (conservative: nothing says where it comes from).
5. Anything else is sourced. A file without any ``source`` whose leading comment calls its numbers
   estimates (``settings.toml``) is estimates throughout.

Not parameters: layer counts (``conv``/``fc``/``rc``, which define a network rather than measure
it), names and strings, observation bins (``features*.toml``) and reward weights (``rewards.toml``).

Grouping and ranges (defaults where the data declares none)
-----------------------------------------------------------
* A device's estimated latencies move together per unit (one factor for ``mi8pro``'s estimated
  ``gpu/fp32`` entries), since each column's estimates come from one rule; every other estimate is
  its own parameter, except that a list in ``links.toml`` (a curve) moves as one.
* A number varies by a factor in [0.5, 1.5] (+-50 %); dBm and dB levels shift by +-6 dB (a
  factor on a logarithmic quantity means nothing; a spread in dB, ``*_sigma_db``, still scales); an accuracy below FP32 varies its *loss* against
  FP32 by +-50 % (a loss of 0 ranges over [0, 0.1] pt, the data's own bound for FP16); an FP32
  accuracy moves every precision of its network together. Values are clipped to what the loaders
  accept (percentages to [0, 100], probabilities and fractions to [0, 1], ``fallback_slowdown`` and
  ``*_mean_requests`` >= 1, accuracies to [0, 1]).
"""

from __future__ import annotations

import copy
import math
import re
import threading
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from autoscale_env import config
from autoscale_env.errors import ConfigError

#: Data files that describe the world (paths relative to ``config.DATA_DIR``); bins and reward
#: weights define the task, not the world.
EXCLUDED_FILES = ("features.toml", "features_per_network.toml", "rewards.toml")
STRUCTURE_FIELDS = ("conv", "fc", "rc")
UNIT_WORDS = ("cpu", "gpu", "dsp", "fp32", "fp16", "int8")

#: Words in a source string that name a field (besides the field's own key).
ALIASES: dict[str, tuple[str, ...]] = {
    "busy_power_w": ("busy",),
    "idle_power_w": ("idle",),
    "cpu_interference": ("interference",),
    "mem_interference": ("interference", "memory"),
    "power_w": ("base",),
    "wifi_active_w": ("wi-fi", "wifi"),
    "accuracy_fp32": ("fp32 accuracy", "accuracy fp32", "accuracy"),
    "accuracy_fp16": ("fp16", "accuracy"),
    "accuracy_int8": ("int8", "accuracy"),
    "input_bytes": ("bytes",),
    "output_bytes": ("bytes",),
    "mcs_phy_mbps": ("phy rates",),
    "mcs_min_rssi_dbm": ("thresholds",),
    "phy_multiplier": ("stream/width scaling", "rates x2"),
    "threshold_shift_db": ("stream/width scaling",),
    "goodput_fraction": ("goodput",),
    "below_min_goodput_mbps": ("below-minimum",),
    "disconnect_rssi_dbm": ("disconnect",),
    "rtt_ms": ("rtt",),
    "rtt_per_mcs_step_below_4_ms": ("rtt",),
    "tail_ms": ("tail",),
    "tail_power_fraction": ("tail",),
    "power_band_edges_dbm": ("power bands",),
    "tx_power_multiplier": ("power bands", "tx"),
    "rx_power_multiplier": ("power bands", "rx"),
    "qos_ms": ("qos",),
    "accuracy_tolerance": ("tolerance",),
    "request_gap_ms": ("gap",),
    "overhead_ms": ("overhead",),
    "fallback_slowdown": ("slower", "fallback"),
}

DEFAULT_SCALE = (0.5, 1.5)
DEFAULT_SHIFT_DB = (-6.0, 6.0)
ZERO_LOSS_RANGE = (0.0, 0.001)

Key = tuple[str | int, ...]


@dataclass(frozen=True)
class Address:
    """One number of the data: a file (relative to ``DATA_DIR``) and its TOML key path."""

    file: str
    path: Key

    def __str__(self) -> str:
        return f"{self.file}:{'.'.join(str(k) for k in self.path)}"


@dataclass(frozen=True)
class Estimate:
    """One parameter of the analysis: estimated numbers that move together.

    ``mode`` says what the parameter's value ``x`` does to each number: ``scale`` (multiply by x),
    ``shift`` (add x, dB), ``loss`` (the accuracy loss against FP32 times x), ``loss_abs`` (a loss
    of x), ``level`` (multiply an FP32 accuracy by x and move its network's other precisions by
    the same amount), ``span`` (x in [-1, 1] moves each number from its value towards the low end
    (x < 0) or the high end (x > 0) of its declared range). ``x = nominal`` reproduces the data.
    """

    name: str
    numbers: tuple[Address, ...]
    mode: str
    low: float
    high: float
    nominal: float
    reason: str
    count: int
    """How many scalar numbers (list items counted one by one) the parameter moves."""
    spans: tuple = ()
    """``span`` mode: per number, its declared ``(lo, hi)`` (a list: one pair per item)."""


# --------------------------------------------------------------------------------------------
# Adapter 1: which numbers are estimates


def world_files() -> list[str]:
    """The data files that describe the world, relative to ``DATA_DIR``."""
    root = config.DATA_DIR
    files = [p for p in sorted(root.glob("*.toml")) if p.name not in EXCLUDED_FILES]
    files += sorted((root / "devices").glob("*.toml"))
    return [str(p.relative_to(root)) for p in files]


@lru_cache(maxsize=None)
def _document(file: str) -> dict[str, Any]:
    with open(config.DATA_DIR / file, "rb") as f:
        return tomllib.load(f)


def _clauses(text: str) -> list[str]:
    """Split at ``;`` outside parentheses."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")" and depth > 0
        if ch == ";" and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [c.strip() for c in out if c.strip()]


def _is_estimate_clause(clause: str) -> bool:
    low = clause.lower()
    return "estimate" in low or "[reconstructed]" in low or "reconstructed" in low


def _named(text: str, field: str, unit_fields: bool) -> bool:
    """Does ``text`` name ``field`` (its key, an alias, or for latency units a unit word)?"""
    low = text.lower()
    if unit_fields:
        if re.search(rf"(?<![\w/]){re.escape(field)}(?![\w/])", low):
            return True
        # a bare component ("int8", "gpu") names every unit that has it, unless it is part of a
        # full unit name written in the text ("gpu/fp32" names only gpu/fp32)
        bare = re.sub(r"\b(cpu|gpu|dsp)/(fp32|fp16|int8)\b", " ", low)
        parts = field.split("/")
        return any(re.search(rf"\b{w}\b", bare) for w in parts if w in UNIT_WORDS)
    words = (field.replace("_", " "), field) + ALIASES.get(field, ())
    return any(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", low) for w in words)


def classify(source: str, fields: list[str], unit_fields: bool = False) -> dict[str, bool]:
    """Interim rules 1-4 (module docstring): field -> True when it is an estimate."""
    clauses = _clauses(source)
    if not any(_is_estimate_clause(c) for c in clauses):
        return {f: False for f in fields}
    if any(c.lower().startswith("estimate") for c in clauses):
        return {f: True for f in fields}
    def names(c: str) -> list[str]:
        if _is_estimate_clause(c):
            low = c.lower()
            c = c[:min(i for i in (low.find("estimate"), low.find("reconstructed")) if i >= 0)]
        return [f for f in fields if _named(c, f, unit_fields)]

    named = [(c, names(c)) for c in clauses]
    blanket = [c for c, n in named if not n]
    if any(_is_estimate_clause(c) for c in blanket):
        unnamed = True
    else:
        unnamed = not blanket  # a blanket sourced clause covers the rest; nothing covers: estimate
    out = {}
    for f in fields:
        said = [_is_estimate_clause(c) for c, n in named if f in n]
        out[f] = any(said) if said else unnamed
    return out


def _numbers(table: dict[str, Any]) -> list[str]:
    return [k for k, v in table.items()
            if k not in STRUCTURE_FIELDS and not isinstance(v, bool) and (
                isinstance(v, (int, float)) or (isinstance(v, list) and v and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)))]


def _header_says_estimate(file: str) -> str:
    lines = []
    for line in (config.DATA_DIR / file).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    text = " ".join(lines)
    return text if "estimate" in text.lower() else ""


def _walk(doc: dict[str, Any], prefix: Key = ()) -> Iterator[tuple[Key, dict[str, Any]]]:
    yield prefix, doc
    for k, v in doc.items():
        if isinstance(v, dict):
            yield from _walk(v, prefix + (k,))


def estimated_numbers() -> list[tuple[Address, str]]:
    """Every (address, reason) the interim reader marks as an estimate, in file order."""
    out = []
    for file in world_files():
        doc = _document(file)
        has_sources = any("source" in t or any(k.endswith("_source") for k in t)
                          for _, t in _walk(doc))
        if not has_sources:
            reason = _header_says_estimate(file)
            if reason:
                for path, table in _walk(doc):
                    out += [(Address(file, path + (k,)), reason) for k in _numbers(table)]
            continue
        for path, table in _walk(doc):
            fields = _numbers(table)
            for key, text in table.items():
                if not (isinstance(text, str) and key.endswith("_source")):
                    continue
                stem = key[: -len("_source")]
                covered = [f for f in fields if f.startswith(stem)]
                for f, est in classify(text, covered).items():
                    if est:
                        out.append((Address(file, path + (f,)), text))
            if isinstance(table.get("source"), str):
                covered = [f for f in fields
                           if not any(f.startswith(k[: -len("_source")])
                                      for k in table if k.endswith("_source"))]
                units = bool(path) and path[0] == "latency_ms"
                for f, est in classify(table["source"], covered, unit_fields=units).items():
                    if est:
                        out.append((Address(file, path + (f,)), table["source"]))
    return out


def _value(addr: Address) -> Any:
    v: Any = _document(addr.file)
    for k in addr.path:
        v = v[k]
    return v


def _field(addr: Address) -> str:
    """The last key of a path that is a name (list items belong to their list's field)."""
    return next(str(k) for k in reversed(addr.path) if isinstance(k, str))


def _mode_and_range(addr: Address) -> tuple[str, float, float, float]:
    field = _field(addr)
    value = _value(addr)
    if field.startswith("accuracy_") and field != "accuracy_tolerance":
        if field == "accuracy_fp32":
            return "level", *DEFAULT_SCALE, 1.0
        fp32 = _document(addr.file)["networks"][addr.path[1]]["accuracy_fp32"]
        if fp32 - value > 1e-12:
            return "loss", *DEFAULT_SCALE, 1.0
        return "loss_abs", *ZERO_LOSS_RANGE, 0.0
    if (field.endswith("_dbm") or field.endswith("_db")) and "sigma" not in field:
        return "shift", *DEFAULT_SHIFT_DB, 0.0  # a level in dB; a spread in dB still scales
    return "scale", *DEFAULT_SCALE, 1.0


def _group(addr: Address) -> str:
    """Parameter name: estimated latencies of one device and unit share one; lists in links.toml
    move whole; settings lists are per item; everything else is one number."""
    stem = Path(addr.file).stem
    if addr.path[0] == "latency_ms":
        return f"{stem}: latency {addr.path[-1]}"
    return f"{stem}: {'.'.join(str(k) for k in addr.path)}"


@lru_cache(maxsize=1)
def enumerate_estimates() -> tuple[Estimate, ...]:
    """Every estimate of the world's data as parameters of the analysis (module docstring).

    Adapter: where the package has the structured provenance report
    (``autoscale_env.provenance.estimates()``: one entry per numeric field with ``estimate`` and
    ``range``), its entries are the parameters, one each, so the count matches that report;
    otherwise the interim reader of the free-text ``source`` strings above is used.
    """
    try:
        from autoscale_env import provenance  # type: ignore[attr-defined]
    except ImportError:
        return interim_estimates()
    return from_provenance(provenance.estimates())


def from_provenance(entries) -> tuple[Estimate, ...]:
    """Parameters from provenance entries (objects with ``name``, ``file``, ``path``, ``value``,
    ``estimate``, ``source``, ``range``, ``explicit_range`` and ``count``), one per estimate.

    A declared range is used as it is (``span`` mode). Without one, the module's defaults apply
    where +-50 % of the value is meaningless: accuracies vary their loss against FP32 and dBm /
    dB levels shift by +-6 dB; every other number takes the report's default range.
    """
    out = []
    for e in entries:
        if not e.estimate:
            continue
        addr = Address(e.file, tuple(e.path))
        field = _field(addr)
        special = (field.startswith("accuracy_") and field != "accuracy_tolerance") or (
            (field.endswith("_dbm") or field.endswith("_db")) and "sigma" not in field)
        if not e.explicit_range and special:
            mode, low, high, nominal = _mode_and_range(addr)
            out.append(Estimate(name=e.name, numbers=(addr,), mode=mode, low=low, high=high,
                                nominal=nominal, reason=e.source, count=e.count))
        else:
            out.append(Estimate(name=e.name, numbers=(addr,), mode="span", low=-1.0, high=1.0,
                                nominal=0.0, reason=e.source, count=e.count,
                                spans=(tuple(e.range),)))
    return tuple(out)


def interim_estimates() -> tuple[Estimate, ...]:
    """The interim reader's parameters (module docstring)."""
    groups: dict[str, list[tuple[Address, str]]] = {}
    for addr, reason in estimated_numbers():
        value = _value(addr)
        if isinstance(value, list) and addr.file == "settings.toml":
            for i in range(len(value)):  # independent choices: one parameter each
                item = Address(addr.file, addr.path + (i,))
                groups.setdefault(_group(item), []).append((item, reason))
        else:
            groups.setdefault(_group(addr), []).append((addr, reason))
    out = []
    for name, members in groups.items():
        addrs = tuple(a for a, _ in members)
        mode, low, high, nominal = _mode_and_range(addrs[0])
        count = sum(len(v) if isinstance(v := _value(a), list) else 1 for a in addrs)
        out.append(Estimate(name=name, numbers=addrs, mode=mode, low=low, high=high,
                            nominal=nominal, reason=members[0][1], count=count))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Adapter 2: a world with the estimates moved


def _clip(field: str, value: float) -> float:
    if field.endswith("_pct"):
        return min(max(value, 0.0), 100.0)
    if "probability" in field or "fraction" in field or field.startswith("accuracy"):
        return min(max(value, 0.0), 1.0)
    if field == "fallback_slowdown" or field.endswith("_mean_requests"):
        return max(value, 1.0)
    return value


def _set(doc: dict[str, Any], path: Key, fn) -> None:
    node: Any = doc
    for k in path[:-1]:
        node = node[k]
    last = path[-1]
    field = str(path[-1] if isinstance(last, str) else path[-2])
    old = node[last]
    if isinstance(old, list):
        node[last] = [_typed(x, _clip(field, fn(x))) for x in old]
    else:
        node[last] = _typed(old, _clip(field, fn(old)))


def _toward(v: float, span: Sequence[float], x: float) -> float:
    lo, hi = float(span[0]), float(span[1])
    return v + x * (v - lo) if x < 0 else v + x * (hi - v)


def _set_span(doc: dict[str, Any], path: Key, span: Any, x: float) -> None:
    node: Any = doc
    for k in path[:-1]:
        node = node[k]
    old = node[path[-1]]
    field = _field(Address("", path))
    if isinstance(old, list):
        node[path[-1]] = [_typed(v, _clip(field, _toward(v, sp, x))) for v, sp in zip(old, span)]
    else:
        node[path[-1]] = _typed(old, _clip(field, _toward(old, span, x)))


def _typed(old: Any, new: float) -> Any:
    return max(1, round(new)) if isinstance(old, int) and not isinstance(old, bool) else float(new)


def perturbed_documents(overrides: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """The data documents (file -> parsed TOML) with each named parameter at its given value."""
    params = {e.name: e for e in enumerate_estimates()}
    unknown = sorted(set(overrides) - set(params))
    if unknown:
        raise ConfigError(f"unknown estimate parameter {unknown[0]!r}; see `autoscale sensitivity "
                          f"--list` for the {len(params)} parameters")
    docs: dict[str, dict[str, Any]] = {}
    for name, x in overrides.items():
        e = params[name]
        if e.nominal == x:
            continue
        for addr in e.numbers:
            doc = docs.setdefault(addr.file, copy.deepcopy(_document(addr.file)))
            if e.mode == "scale":
                _set(doc, addr.path, lambda v, x=x: v * x)
            elif e.mode == "shift":
                _set(doc, addr.path, lambda v, x=x: v + x)
            elif e.mode == "span":
                _set_span(doc, addr.path, e.spans[e.numbers.index(addr)], x)
            else:
                net = doc["networks"][addr.path[1]]
                fp32 = net["accuracy_fp32"]
                if e.mode == "loss":
                    _set(doc, addr.path, lambda v, x=x, fp32=fp32: fp32 - (fp32 - v) * x)
                elif e.mode == "loss_abs":
                    _set(doc, addr.path, lambda v, x=x, fp32=fp32: fp32 - x)
                else:  # level: FP32 times x, the other precisions keep their loss
                    delta = fp32 * (x - 1.0)
                    for p in ("fp32", "fp16", "int8"):
                        _set(doc, addr.path[:-1] + (f"accuracy_{p}",), lambda v, d=delta: v + d)
    return docs


_READ_LOCK = threading.Lock()


@contextmanager
def _reading(docs: Mapping[str, dict[str, Any]]):
    """Let the config loaders read ``docs`` in place of the files they name (they then validate the
    perturbed numbers exactly as they validate the shipped ones)."""
    by_path = {(config.DATA_DIR / f).resolve(): d for f, d in docs.items()}
    # unperturbed world files come from the parse cache: the loaders only read what they are given
    # (and look at every device file to list the valid edge/cloud names on each call)
    by_path.update({(config.DATA_DIR / f).resolve(): _document(f) for f in world_files()
                    if f not in docs})
    real = config._read_toml

    def read(path):
        doc = by_path.get(Path(path).resolve())
        return doc if doc is not None else real(path)

    with _READ_LOCK:
        config._read_toml = read
        try:
            yield
        finally:
            config._read_toml = real


@dataclass(frozen=True)
class LoadedWorld:
    """The loaded config objects of one world (what a simulator backend is built from)."""

    phones: dict[str, config.DeviceProfile]
    devices: dict[str, config.DeviceProfile]
    workloads: dict[str, Any]
    links: dict[str, config.LinkModel]
    settings: tuple
    scenarios: dict[str, config.Scenario]


def load_world(overrides: Mapping[str, float], phones: tuple[str, ...]) -> LoadedWorld:
    """Parse the world with ``overrides`` applied, through the real loaders (uncached)."""
    docs = perturbed_documents(overrides)
    with _reading(docs):
        profiles = {p: config.load_device.__wrapped__(str(config.resolve_device_path(p)))
                    for p in phones}
        devices = dict(profiles)
        for prof in profiles.values():
            for other in (prof.edge, prof.cloud):
                if other not in devices:
                    devices[other] = config.load_device.__wrapped__(
                        str(config.resolve_device_path(other)))
        return LoadedWorld(
            phones=profiles, devices=devices, workloads=config.load_workloads.__wrapped__(),
            links=config.load_links.__wrapped__(), settings=config.load_settings.__wrapped__(),
            scenarios=config.load_scenarios.__wrapped__())


_REUSED: dict[tuple[str, str, str], Any] = {}


def build_world(overrides: Mapping[str, float], *, device: str, scenario: str, setting: str,
                world: LoadedWorld | None = None, reuse: bool = False):
    """A sim backend of one cell whose estimates take the values in ``overrides``.

    Adapter: today it builds a :class:`~autoscale_env.backends.sim.SimBackend` from the bundled
    data, swaps in the perturbed config objects and re-runs its per-(network, target)
    precomputation. Pass ``world`` (from :func:`load_world`) to reuse one parse across cells.
    ``reuse=True`` re-targets this process's previous backend of the same cell instead of building
    a new one (the previous world of that cell is gone then: for one world at a time, as the
    sensitivity workers evaluate them).
    """
    from autoscale_env.backends.sim import SimBackend

    w = world if world is not None else load_world(overrides, (device,))
    key = (device, scenario, setting)
    backend = _REUSED.get(key) if reuse else None
    if backend is None:
        backend = SimBackend(device=device, scenario=scenario, setting=setting)
        if reuse:
            _REUSED[key] = backend
    phone = w.phones[device]
    backend.phone = phone
    backend.edge, backend.cloud = w.devices[phone.edge], w.devices[phone.cloud]
    backend.links = w.links
    backend.apps, backend.static, backend.dynamic = w.settings
    backend.scenario = w.scenarios[scenario]
    if list(w.workloads) != [wl.name for wl in backend.workloads]:
        raise ConfigError("a perturbed world must keep the catalog's networks and their order")
    backend.workloads = tuple(w.workloads.values())
    backend._precompute()
    if not all(math.isfinite(x) for x in backend.reference_energy_mj):
        raise ConfigError(f"perturbed world {dict(overrides)} has a non-finite reference energy")
    return backend
