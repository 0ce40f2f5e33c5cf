"""``autoscale validate``: the world's numbers against public measurements.

The measurements live in ``autoscale_env/data/measurements/*.csv``, one file per public source. Each
file starts with ``# key: value`` lines naming its ``origin`` (repository or page), ``version``
(commit or date) and ``table``; then one row per published number:

=============  ==================================================================================
column         meaning
=============  ==================================================================================
quantity       ``latency_ms`` (a device profile's ``latency_ms.<network>.<unit>``), ``accuracy``
               (the catalog's ``accuracy_<unit>`` of ``<network>``), ``power_w`` (a device
               profile's field, dotted: ``base.wifi_active_w``, ``processors.cpu.busy_power_w``) or
               ``latency_ratio`` (``device`` is ``A/B``: A's latency over B's for one network and
               unit, against the ratio of two SoCs measured in ONE framework: the way to use a
               framework whose absolute times differ from TFLite's)
device         profile name (empty for accuracy; ``A/B`` for a ratio)
network        catalog network (empty for power)
unit           ``cpu/fp32``..., a precision for accuracy, the field path for power
relation       ``=`` (compare), ``<=`` (the world must not exceed it: a ceiling), ``>=`` (a floor)
value          the measurement in the world's units (ms, fraction, W)
published      the number as published, with its unit (what a reader finds in the source)
measured_on    the device or data set it was measured on
conditions     threads, delegate, precision, model file...
=============  ==================================================================================

For every row the ratio world / measured is computed; its error is ``|log2(ratio)|`` for ``=`` rows
and only the part on the wrong side for ``<=`` / ``>=`` rows. The report groups rows per device and
quantity/unit (median and worst ratio) and fails when any row's error exceeds ``--max-log2-error``,
naming the file and the line of every failing row. Per device (a ratio row counts for its
numerator A) it also gives the median ``|log2(sim/measured)|`` and the geometric-mean bias
(``2 ** mean(log2(sim/measured))`` over ``=`` rows: below 1 the world is too fast / too low) and
fails when a device's median exceeds ``--max-median-log2-error`` (0.4) or its bias leaves
``[1/--max-bias, --max-bias]`` (1.25). A row whose unit the profile does not model (e.g.
a GPU at its default precision on a profile that only has ``gpu/fp32``) is counted, not compared.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from autoscale_env.world import config
from autoscale_env.world.errors import ConfigError
from autoscale_env.world.files import MAX_CSV_BYTES, read_text

MEASUREMENTS_DIR = config.DATA_DIR / "measurements"
QUANTITIES = ("latency_ms", "accuracy", "power_w", "latency_ratio")
RELATIONS = ("=", "<=", ">=")
COLUMNS = ("quantity", "device", "network", "unit", "relation", "value", "published",
           "measured_on", "conditions")
REQUIRED_META = ("origin", "version", "table")

#: Default bound: a factor of sqrt(2) either way. Copied sourced numbers sit at 1.0; the bound leaves
#: room for the same model measured twice on one SoC (TFLite's two pages differ by up to 3 %) and for
#: mappings stated in the files (Pixel 3 for the Mi 8 Pro), and catches a wrong unit or a slipped
#: digit (a factor of 10 is 3.3).
DEFAULT_MAX_LOG2_ERROR = 0.5
#: Per device: the median |log2(sim/measured)| may not exceed this (a factor of 1.32).
DEFAULT_MAX_MEDIAN_LOG2_ERROR = 0.4
#: Per device: the geometric-mean bias sim/measured must lie in [1/this, this].
DEFAULT_MAX_BIAS = 1.25


@dataclass(frozen=True)
class Measurement:
    """One published number and where it sits (file and 1-based line)."""

    file: str
    line: int
    quantity: str
    device: str
    network: str
    unit: str
    relation: str
    value: float
    published: str
    measured_on: str
    conditions: str


@dataclass(frozen=True)
class Comparison:
    """A measurement beside the world's number (``world`` is None when not modelled)."""

    m: Measurement
    world: float | None

    @property
    def ratio(self) -> float:
        return self.world / self.m.value

    @property
    def log2_error(self) -> float:
        """``|log2(world / measured)|`` for ``=``; for a bound only the violating side counts."""
        e = math.log2(self.ratio)
        if self.m.relation == "<=":
            return max(e, 0.0)
        if self.m.relation == ">=":
            return max(-e, 0.0)
        return abs(e)


def read_measurements(path: str | Path) -> tuple[dict[str, str], list[Measurement]]:
    """Header metadata and rows of one measurement file; errors name the file, line and column."""
    path = Path(path)
    text = read_text(path, ConfigError, max_bytes=MAX_CSV_BYTES, what="measurement file")
    meta: dict[str, str] = {}
    lines = text.splitlines()
    first = 0
    while first < len(lines) and lines[first].startswith("#"):
        key, sep, value = lines[first][1:].partition(":")
        if sep:
            meta[key.strip()] = value.strip()
        first += 1
    missing = [k for k in REQUIRED_META if not meta.get(k)]
    if missing:
        raise ConfigError(f"{path}: header must give '# {missing[0]}: ...' (every measurement file "
                          f"names its {', '.join(REQUIRED_META)})")
    reader = csv.DictReader(lines[first:])
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ConfigError(f"{path}: line {first + 1}: columns must be {','.join(COLUMNS)}, got "
                          f"{','.join(reader.fieldnames or [])}")
    rows = []
    for k, raw in enumerate(reader):
        line = first + 2 + k
        where = f"{path}: line {line}"
        if None in raw or any(v is None for v in raw.values()):
            raise ConfigError(f"{where}: expected {len(COLUMNS)} columns")
        if raw["quantity"] not in QUANTITIES:
            raise ConfigError(f"{where}: column 'quantity' must be one of {', '.join(QUANTITIES)}, "
                              f"got {raw['quantity']!r}")
        if raw["relation"] not in RELATIONS:
            raise ConfigError(f"{where}: column 'relation' must be one of {', '.join(RELATIONS)}, "
                              f"got {raw['relation']!r}")
        try:
            value = float(raw["value"])
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{where}: column 'value' must be a positive number, got {raw['value']!r}")
        rows.append(Measurement(file=str(path), line=line, value=value,
                                **{c: raw[c].strip() for c in COLUMNS if c != "value"}))
    return meta, rows


def world_value(m: Measurement, profiles: Mapping[str, str] | None = None) -> float | None:
    """The world's number for measurement ``m`` (None when the world has no such unit).

    ``profiles`` maps a device name to another profile file to validate instead of the bundled one.
    Unknown devices, networks or fields raise :class:`ConfigError` naming the row.
    """
    where = f"{m.file}: line {m.line}"
    try:
        if m.quantity == "accuracy":
            net = config.load_workloads()[m.network]
            return net.accuracy.get(m.unit)
        if m.quantity == "latency_ratio":
            num, sep, den = m.device.partition("/")
            if not (sep and num and den):
                raise KeyError(f"device {m.device!r} is not A/B")
            a = config.load_device((profiles or {}).get(num, num)).latency_ms[m.network].get(m.unit)
            b = config.load_device((profiles or {}).get(den, den)).latency_ms[m.network].get(m.unit)
            return None if a is None or b is None else a / b
        device = config.load_device((profiles or {}).get(m.device, m.device))
        if m.quantity == "latency_ms":
            return device.latency_ms[m.network].get(m.unit)
        return _power_field(device, m.unit)
    except (KeyError, AttributeError) as e:
        raise ConfigError(f"{where}: {m.quantity} of device {m.device!r}, network {m.network!r}, "
                          f"unit {m.unit!r} names nothing in the world ({e})") from None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _power_field(device: config.DeviceProfile, path: str) -> float:
    parts = path.split(".")
    if parts == ["base", "power_w"]:
        return device.base_power_w
    if parts == ["base", "wifi_active_w"]:
        return device.wifi_active_w
    if len(parts) == 3 and parts[0] == "processors":
        return getattr(device.processors[parts[1]], parts[2])
    raise KeyError(path)


def compare(files: Sequence[str | Path] | None = None,
            profiles: Mapping[str, str] | None = None) -> tuple[list[Comparison], dict[str, dict]]:
    """Every bundled (or given) measurement beside the world's number; also each file's header."""
    paths = [Path(f) for f in files] if files else sorted(MEASUREMENTS_DIR.glob("*.csv"))
    if not paths:
        raise ConfigError(f"{MEASUREMENTS_DIR}: no measurement files (*.csv)")
    out, meta = [], {}
    for path in paths:
        header, rows = read_measurements(path)
        meta[str(path)] = header
        out += [Comparison(m, world_value(m, profiles)) for m in rows]
    return out, meta


def _group_key(c: Comparison) -> tuple[str, str, str]:
    return (c.m.device or "(catalog)", c.m.quantity, c.m.unit)


def device_of(c: Comparison) -> str:
    """The device a row validates: its profile, a ratio's numerator, or ``(catalog)``."""
    return c.m.device.partition("/")[0] if c.m.device else "(catalog)"


@dataclass(frozen=True)
class DeviceSummary:
    """Per device: rows compared, median |log2(sim/measured)| and geometric-mean bias."""

    device: str
    rows: int
    median_log2_error: float
    bias: float
    """``2 ** mean(log2(sim/measured))`` over ``=`` rows (1.0 when there are none)."""

    def breaks(self, max_median: float, max_bias: float) -> list[str]:
        """What this device breaks: the median bound, the bias bound, or nothing."""
        out = []
        if self.median_log2_error > max_median:
            out.append(f"median |log2(sim/measured)| {self.median_log2_error:.2f} > {max_median:g}")
        if not (1 / max_bias <= self.bias <= max_bias):
            out.append(f"geometric-mean bias {self.bias:.3g} outside [{1 / max_bias:.3g}, {max_bias:g}]")
        return out


def summaries(comparisons: Sequence[Comparison]) -> list[DeviceSummary]:
    """One :class:`DeviceSummary` per device with compared rows, sorted by device."""
    by: dict[str, list[Comparison]] = defaultdict(list)
    for c in comparisons:
        if c.world is not None:
            by[device_of(c)].append(c)
    out = []
    for dev in sorted(by):
        cs = by[dev]
        eq = [math.log2(c.ratio) for c in cs if c.m.relation == "="]
        out.append(DeviceSummary(dev, len(cs), statistics.median(c.log2_error for c in cs),
                                 2 ** statistics.fmean(eq) if eq else 1.0))
    return out


def report(comparisons: Sequence[Comparison], max_log2_error: float) -> tuple[str, list[Comparison]]:
    """The Markdown table (per device and quantity/unit) and the rows that break the bound."""
    groups: dict[tuple, list[Comparison]] = defaultdict(list)
    skipped = 0
    for c in comparisons:
        if c.world is None:
            skipped += 1
        else:
            groups[_group_key(c)].append(c)
    lines = ["| device | quantity | unit | rows | median sim/measured | worst sim/measured | worst row |",
             "|---|---|---|---|---|---|---|"]
    for key in sorted(groups):
        cs = groups[key]
        worst = max(cs, key=lambda c: c.log2_error)
        med = statistics.median(c.ratio for c in cs)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(cs)} | {med:.3g} | "
                     f"{worst.ratio:.3g}{'' if worst.m.relation == '=' else f' ({worst.m.relation})'} | "
                     f"{Path(worst.m.file).name}:{worst.m.line} {worst.m.network or worst.m.measured_on} |")
    failing = [c for c in comparisons if c.world is not None and c.log2_error > max_log2_error]
    compared = sum(len(v) for v in groups.values())
    lines += ["", f"{compared} measurements compared, {skipped} not modelled by the world "
                  f"(no such unit in the profile); bound |log2(sim/measured)| <= {max_log2_error:g}.",
              "", "| device | rows | median abs log2(sim/measured) | geometric-mean bias sim/measured |",
              "|---|---|---|---|"]
    for d in summaries(comparisons):
        lines.append(f"| {d.device} | {d.rows} | {d.median_log2_error:.3f} | {d.bias:.3f} |")
    return "\n".join(lines) + "\n", failing


def failures_text(failing: Sequence[Comparison]) -> str:
    """The failing rows, grouped by file: ``file: rows 3, 7 (...)``."""
    by_file: dict[str, list[Comparison]] = defaultdict(list)
    for c in failing:
        by_file[c.m.file].append(c)
    out = []
    for file, cs in by_file.items():
        rows = ", ".join(str(c.m.line) for c in cs)
        detail = "\n".join(f"    line {c.m.line}: {c.m.device or 'catalog'} {c.m.network} {c.m.unit} "
                           f"sim {c.world:g} vs measured {c.m.value:g} ({c.m.published}), "
                           f"log2 error {c.log2_error:.2f}" for c in cs)
        out.append(f"{file}: rows {rows}\n{detail}")
    return "\n".join(out)
