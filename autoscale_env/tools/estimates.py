"""The world's estimates, and worlds with them moved: the two adapters of ``autoscale sensitivity``.

Everything the sensitivity analysis knows about the data goes through two functions here, so that a
change of the provenance format or of the simulator's internals is absorbed in this one module:

* :func:`enumerate_estimates` lists every number of the data marked as an estimate, one parameter
  per entry of the provenance report, with the range each may take.
* :func:`build_world` builds a simulator backend for one cell in which those parameters take given
  values.

Which numbers are estimates
---------------------------
The data carries its provenance next to the values (``source`` / ``sources`` / ``ranges``, see
:mod:`autoscale_env.world.provenance`). :func:`enumerate_estimates` takes that report's estimate entries
as they are, one parameter each (a list, e.g. a curve in ``links.toml``, moves as one), so the
count matches ``autoscale provenance``, with their declared ranges (:func:`from_provenance`).

Not parameters: layer counts (``conv``/``fc``/``rc``, which define a network rather than measure
it), names and strings, observation bins (``features*.toml``) and reward weights (``rewards.toml``).

Ranges where the data declares none
-----------------------------------
The report's default (+-50 % of the value), except where that means nothing: dBm and dB levels
shift by +-6 dB (a spread in dB, ``*_sigma_db``, still scales); an accuracy below FP32 varies its
*loss* against FP32 by +-50 % (a loss of 0 ranges over [0, 0.1] pt, the data's own bound for
FP16); an FP32 accuracy moves every precision of its network together. Values are clipped to what
the loaders accept (percentages to [0, 100], probabilities and fractions to [0, 1],
``fallback_slowdown`` and ``*_mean_requests`` >= 1, accuracies to [0, 1]).
"""

from __future__ import annotations

import copy
import math
import threading
import tomllib
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from autoscale_env.world import config
from autoscale_env.world.errors import ConfigError

#: Data files that describe the world (paths relative to ``config.DATA_DIR``); bins and reward
#: weights define the task, not the world.
EXCLUDED_FILES = ("features.toml", "features_per_network.toml", "rewards.toml")

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


@lru_cache(maxsize=1)
def enumerate_estimates() -> tuple[Estimate, ...]:
    """Every estimate of the world's data as parameters of the analysis: one per estimate entry of
    :func:`autoscale_env.world.provenance.estimates`, in its order (so the count matches
    ``autoscale provenance``)."""
    from autoscale_env.world import provenance

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
    real = config.read_toml

    def read(path):
        doc = by_path.get(Path(path).resolve())
        return doc if doc is not None else real(path)

    with _READ_LOCK:
        config.read_toml = read
        try:
            yield
        finally:
            config.read_toml = real


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


def build_world(overrides: Mapping[str, float], *, device: str, scenario: str, setting: str,
                world: LoadedWorld | None = None):
    """A sim backend of one cell whose estimates take the values in ``overrides``.

    Adapter: the perturbed config objects (phone, its edge and cloud, links, catalog, settings,
    scenario) go to the public :class:`~autoscale_env.backends.sim.SimBackend` constructor, which
    tabulates them with the one outcome model (:class:`~autoscale_env.world.rules.OutcomeModel`). Pass
    ``world`` (from :func:`load_world`) to reuse one parse across cells.
    """
    from autoscale_env.backends.sim import SimBackend

    w = world if world is not None else load_world(overrides, (device,))
    if device not in w.phones:
        raise ConfigError(f"phone {device!r} is not in the loaded world (phones: "
                          f"{', '.join(w.phones)})")
    phone = w.phones[device]
    if scenario not in w.scenarios:
        raise config.UnknownNameError("scenario", scenario, list(w.scenarios))
    backend = SimBackend(phone, w.scenarios[scenario], setting,
                         edge=w.devices[phone.edge], cloud=w.devices[phone.cloud], links=w.links,
                         workloads=tuple(w.workloads.values()), settings=w.settings)
    if not all(math.isfinite(x) for x in backend.reference_energy_mj):
        raise ConfigError(f"perturbed world {dict(overrides)} has a non-finite reference energy")
    return backend
