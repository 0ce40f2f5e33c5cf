"""``autoscale validate``: the world's numbers against public measurements.

The measurements live in ``autoscale_env/data/measurements/*.csv``, one file per public source. Each
file starts with ``# key: value`` lines naming its ``origin`` (repository or page), ``version``
(commit or date) and ``table``; then one row per published number:

=============  ==================================================================================
column         meaning
=============  ==================================================================================
quantity       ``latency_ms`` (a device profile's ``latency_ms.<network>.<unit>``), ``accuracy``
               (the catalog's ``accuracy_<unit>`` of ``<network>``) or ``power_w`` (a device
               profile's field, dotted: ``base.wifi_active_w``, ``processors.cpu.busy_power_w``)
device         profile name (empty for accuracy)
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
naming the file and the line of every failing row. A row whose unit the profile does not model (e.g.
a GPU at its default precision on a profile that only has ``gpu/fp32``) is counted, not compared.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from autoscale_env.world import config
from autoscale_env.world.errors import AutoScaleError, ConfigError
from autoscale_env.world.files import MAX_CSV_BYTES, read_text

MEASUREMENTS_DIR = config.DATA_DIR / "measurements"
QUANTITIES = ("latency_ms", "accuracy", "power_w")
RELATIONS = ("=", "<=", ">=")
COLUMNS = ("quantity", "device", "network", "unit", "relation", "value", "published",
           "measured_on", "conditions")
REQUIRED_META = ("origin", "version", "table")

#: Default bound: a factor of sqrt(2) either way. Copied sourced numbers sit at 1.0; the bound leaves
#: room for the same model measured twice on one SoC (TFLite's two pages differ by up to 3 %) and for
#: mappings stated in the files (Pixel 3 for the Mi 8 Pro), and catches a wrong unit or a slipped
#: digit (a factor of 10 is 3.3).
DEFAULT_MAX_LOG2_ERROR = 0.5


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
                  f"(no such unit in the profile); bound |log2(sim/measured)| <= {max_log2_error:g}."]
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


def _profile_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--profile {text!r}: expected NAME=PATH (e.g. mi8pro=my.toml)")
    return name, path


def main(argv: list[str] | None = None, print_fn: Callable[[str], None] = print) -> int:
    """Entry point of ``autoscale validate`` / ``python scripts/validate.py``."""
    parser = argparse.ArgumentParser(
        prog="autoscale validate",
        description="Compare the world's numbers with the public measurements bundled in "
                    "autoscale_env/data/measurements; exit 1 when a row breaks the bound.")
    parser.add_argument("--max-log2-error", type=float, default=DEFAULT_MAX_LOG2_ERROR,
                        help="largest |log2(sim/measured)| allowed per row "
                             f"(default {DEFAULT_MAX_LOG2_ERROR}: a factor of sqrt(2))")
    parser.add_argument("--measurements", nargs="+", default=None, metavar="CSV",
                        help="measurement files (default: every bundled one)")
    parser.add_argument("--profile", action="append", type=_profile_arg, default=[],
                        metavar="NAME=PATH",
                        help="validate this profile file in place of the bundled device NAME")
    args = parser.parse_args(argv)
    if not (args.max_log2_error >= 0):
        parser.error(f"--max-log2-error must be >= 0, got {args.max_log2_error}")
    try:
        comparisons, meta = compare(args.measurements, dict(args.profile))
    except AutoScaleError as e:
        print(f"autoscale validate: error: {e}", file=sys.stderr)
        return 2
    # A check that compared nothing, or a --profile no row names, would pass by checking nothing.
    measured = sorted({c.m.device for c in comparisons if c.m.device})
    unused = sorted(set(dict(args.profile)) - set(measured))
    if unused:
        print(f"autoscale validate: error: --profile {unused[0]}=...: no measurement row names "
              f"device {unused[0]!r}, so the profile would not be checked; devices measured: "
              f"{', '.join(measured) or 'none'}", file=sys.stderr)
        return 2
    if not any(c.world is not None for c in comparisons):
        files = ", ".join(meta) or "(none)"
        print(f"autoscale validate: error: no measurement compared ({len(comparisons)} row(s) in "
              f"{files}, none modelled by the world); an empty check passes nothing",
              file=sys.stderr)
        return 2
    table, failing = report(comparisons, args.max_log2_error)
    print_fn(table)
    print_fn("Sources:\n" + "\n".join(f"- {Path(f).name}: {m['origin']}; {m['version']}; "
                                        f"table {m['table']}" for f, m in meta.items()))
    if failing:
        print(f"autoscale validate: {len(failing)} measurement(s) break |log2(sim/measured)| <= "
              f"{args.max_log2_error:g}:\n{failures_text(failing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
