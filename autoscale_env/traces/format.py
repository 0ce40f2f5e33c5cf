"""Recorded traces: the schema, a validating reader, an append-only writer, bundled traces.

A trace is a table with **one row per (request, target)**: for every inference request, its context
(which network, co-running load, both signal strengths, when) and, for each target it was run on,
what happened there (latency, phone energy, accuracy). A *full* trace has a row for every target of
every request, so every target's outcome under the same conditions is known and the oracle can be
computed; a *partial* trace (a phone's log, which only knows the target it chose) has some rows
missing, and those outcomes are unknown. ``traces/README.md`` is the user-facing description of the
format; this module is its definition.

File formats (picked by content, not by name):

* **CSV** (``.csv``) or **gzip-compressed CSV** (``.csv.gz``): the interchange format. The first
  line is the header, ``# autoscale-trace {...}`` with a one-line JSON object (device, scenario,
  setting, targets, coverage, provenance; see :class:`TraceHeader`). More ``#`` lines and empty
  lines may follow anywhere and are skipped. The first other line names the columns (any order;
  extra columns are ignored), then one line per row. Every line ends with a newline: a last line
  without one is what a killed recording leaves behind, and is dropped with a
  :class:`TraceCutWarning`. Floats are written with Python's shortest round-trip ``repr``, so a
  value survives writing and reading bit for bit. A ``.csv.gz`` may hold several gzip members
  (the recorder appends one per flushed batch); a last member cut short is read as far as it goes.
* **Parquet** (``.parquet``, needs ``pyarrow``): the same columns with types int64 / float64 /
  string, and the header JSON in the schema metadata under the key ``autoscale_trace``.

Validation errors raise :class:`~autoscale_env.world.errors.TraceFormatError` naming the file, the row
(``row r`` counts data rows from 1; CSV adds ``line l``, the line of the uncompressed text) and the
column. The error object also carries ``path``, ``row`` and ``column`` attributes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import warnings
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Self

import numpy as np

from autoscale_env.world import config
from autoscale_env.world.types import ENERGY_SOURCES, Target, Workload
from autoscale_env.world.errors import DependencyMissing, TraceFormatError, UnknownNameError
from autoscale_env.world.files import atomic_writer, fsync_directory

#: Value of the header's ``format`` field, and the marker after ``#`` on a CSV's first line.
FORMAT = "autoscale-trace"
#: Version of the format this module reads and writes.
VERSION = 1
#: How a CSV trace's first line starts (the header JSON follows on the same line).
HEADER_PREFIX = f"# {FORMAT} "
#: Key of the header JSON in a Parquet file's schema metadata.
PARQUET_METADATA_KEY = b"autoscale_trace"
#: File name endings of traces (bundled-trace lookup strips them).
SUFFIXES = (".csv.gz", ".csv", ".parquet")
#: ``coverage`` values: ``full`` (every target of every request) or ``partial`` (a log).
COVERAGES = ("full", "partial")
#: Package holding the bundled traces (the repository's ``traces/`` folder).
BUNDLED_PACKAGE = "autoscale_env.bundled_traces"


class TraceCutWarning(UserWarning):
    """A trace ends inside a line or a gzip member: a recording that was killed.

    Everything before the cut was loaded.
    """


@dataclass(frozen=True)
class Column:
    """One column of the trace schema."""

    name: str
    kind: str
    """``int``, ``float`` or ``str``."""
    unit: str
    low: float | None
    """Smallest valid value (numbers), or None."""
    high: float | None
    """Largest valid value (numbers), or None."""
    per_request: bool
    """True for context columns: every row of one request must hold the same value."""
    description: str


#: The columns, in the order the writer uses. Every one is required.
COLUMNS: tuple[Column, ...] = (
    Column("request", "int", "", 0, None, True,
           "request id; a request's rows share it, requests replay in ascending id order"),
    Column("timestamp_s", "float", "s", None, None, True,
           "when the request arrived (any origin; the sim writes id x the scenario's request gap)"),
    Column("network", "str", "", None, None, True, "network short name from workloads.toml"),
    Column("conv", "int", "layers", 0, None, True, "CONV layers of the network"),
    Column("fc", "int", "layers", 0, None, True, "fully connected layers of the network"),
    Column("rc", "int", "layers", 0, None, True, "recurrent layers of the network"),
    Column("co_cpu_pct", "float", "%", 0.0, 100.0, True, "CPU utilisation of co-running apps"),
    Column("co_mem_pct", "float", "%", 0.0, 100.0, True, "memory use of co-running apps"),
    Column("rssi_wifi_dbm", "float", "dBm", -150.0, 0.0, True,
           "Wi-Fi signal strength on the path to the cloud"),
    Column("rssi_p2p_dbm", "float", "dBm", -150.0, 0.0, True,
           "Wi-Fi Direct signal strength to the edge device"),
    Column("target", "str", "", None, None, False,
           "execution target, location/processor/precision"),
    Column("latency_ms", "float", "ms", 0.0, None, False, "end-to-end latency on that target"),
    Column("energy_mj", "float", "mJ", 0.0, None, False,
           "phone energy of the request on that target"),
    Column("accuracy", "float", "fraction", 0.0, 1.0, False, "accuracy of the network at that "
           "target's precision, in [0, 1]"),
    Column("energy_source", "str", "", None, None, False,
           f"how energy was obtained: {', '.join(ENERGY_SOURCES)}"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
_BY_NAME = {c.name: c for c in COLUMNS}
#: Context columns compared across the rows of one request (``request`` itself groups them).
_CONTEXT = tuple(c.name for c in COLUMNS if c.per_request and c.name != "request")
_FLOATS = ("co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm")


# --------------------------------------------------------------------------------------------
# Header


@dataclass(frozen=True)
class TraceHeader:
    """What a trace is about and where it comes from (the CSV's first line, as JSON).

    Attributes:
        device: phone profile name (``mi8pro``, ...) or path; a bundled name lets replay validate
            targets against the profile and take ``E_ref`` from the sim model.
        scenario: ``non_streaming``, ``streaming`` or ``translation``.
        setting: ``static`` or ``dynamic``.
        provenance: free-form object saying where the numbers come from: simulated with which
            package and profile version (``kind: "simulated"``), or measured on which host with
            which tools (``kind: "measured"``). Required, may not be empty.
        targets: target names in action order; empty means the device profile's targets (bundled
            device) or the targets in order of first appearance.
        coverage: ``full`` (each request has a row for every target) or ``partial``.
        episode_requests: requests per recorded episode (the recorder reset its backend every
            this many requests, e.g. 101 = a reset plus ``MAX_EPISODE_STEPS`` steps), or None
            for one continuous stream. Sequential replay starts episodes at these boundaries.
        conditions: the machine's state while the trace was recorded (optional; traces written
            before it existed have none): load average before/after, CPU count, governor,
            the CPU share used by processes outside the recording's process tree
            (``foreign_cpu``), the link model's version. Written by
            :mod:`autoscale_env.traces.recorder`, read by ``autoscale calibrate`` to refuse a
            trace whose foreign load would confound the fit. See :data:`CONDITION_FIELDS`.
        extra: any other header fields, kept as they are.
    """

    device: str
    scenario: str
    setting: str
    provenance: dict[str, Any]
    targets: tuple[str, ...] = ()
    coverage: str = "full"
    episode_requests: int | None = None
    conditions: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to the file."""
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "device": self.device,
                               "scenario": self.scenario, "setting": self.setting,
                               "targets": list(self.targets), "coverage": self.coverage,
                               "episode_requests": self.episode_requests,
                               "provenance": self.provenance}
        if self.conditions is not None:
            out["conditions"] = self.conditions
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    def to_json(self) -> str:
        """One line of JSON (no newlines, ASCII only)."""
        return json.dumps(self.to_dict(), separators=(", ", ": "), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TraceHeader:
        """Validate a parsed header; errors name ``where`` (file and line) and the field."""

        def fail(key: str, problem: str) -> None:
            _fail(f"{where}, header field '{key}' {problem}", column=key)

        if not isinstance(data, dict):
            _fail(f"{where}: the header must be a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            fail("format", f"must be {FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != VERSION:
            fail("version", f"must be {VERSION} (the version this package reads), "
                            f"got {data.get('version')!r}")
        text = {}
        for key in ("device", "scenario", "setting"):
            value = data.get(key)
            if not isinstance(value, str) or not value:
                fail(key, f"must be a non-empty string, got {value!r}")
            text[key] = value
        if text["scenario"] not in config.load_scenarios():
            valid = ", ".join(config.load_scenarios())
            fail("scenario", f"is {text['scenario']!r}; valid: {valid}")
        if text["setting"] not in config.SETTINGS:
            fail("setting", f"is {text['setting']!r}; valid: {', '.join(config.SETTINGS)}")
        provenance = data.get("provenance")
        if not isinstance(provenance, dict) or not provenance:
            fail("provenance", "must be a non-empty object saying where the numbers come from "
                               "(e.g. {\"kind\": \"measured\", \"host\": ..., \"tools\": ...})")
        targets = data.get("targets", [])
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            fail("targets", f"must be a list of target names, got {targets!r}")
        for t in targets:
            try:
                Target.parse(t)
            except ValueError as e:
                fail("targets", f"has an invalid target: {e}")
        if len(set(targets)) != len(targets):
            fail("targets", "lists a target twice")
        coverage = data.get("coverage", "full")
        if coverage not in COVERAGES:
            fail("coverage", f"must be one of {', '.join(COVERAGES)}, got {coverage!r}")
        episode = data.get("episode_requests")
        if episode is not None and (isinstance(episode, bool) or not isinstance(episode, int)
                                    or episode < 1):
            fail("episode_requests", f"must be a positive integer or null, got {episode!r}")
        conditions = data.get("conditions")
        if conditions is not None:
            _check_conditions(conditions, fail)
        known = {"format", "version", "device", "scenario", "setting", "provenance", "targets",
                 "coverage", "episode_requests", "conditions"}
        return cls(device=text["device"], scenario=text["scenario"], setting=text["setting"],
                   provenance=provenance, targets=tuple(targets), coverage=coverage,
                   episode_requests=episode, conditions=conditions,
                   extra={k: v for k, v in data.items() if k not in known})


#: Numeric fields of a header's ``conditions`` object and their valid range (all optional; a
#: field the recorder could not read is null). ``foreign_cpu`` is an object of fractions.
CONDITION_FIELDS: dict[str, tuple[float, float]] = {
    "cpu_count": (1, math.inf),
    "cpus_used": (1, math.inf),
    "duration_s": (0.0, math.inf),
}
#: Fractions of the machine's CPU time inside ``conditions.foreign_cpu``.
FOREIGN_CPU_FIELDS = ("mean", "max_interval")


def _check_conditions(conditions: Any, fail: Callable[[str, str], None]) -> None:
    """Validate the optional ``conditions`` header object (types and ranges, not completeness)."""
    if not isinstance(conditions, dict):
        fail("conditions", f"must be an object, got {type(conditions).__name__}")
    for key, (low, high) in CONDITION_FIELDS.items():
        v = conditions.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not low <= v <= high):
            fail(f"conditions.{key}", f"must be a number in [{low}, {high}] or null, got {v!r}")
    for key in ("load_average_before", "load_average_after"):
        v = conditions.get(key)
        if v is not None and (not isinstance(v, list) or len(v) != 3 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in v)):
            fail(f"conditions.{key}", f"must be [1 min, 5 min, 15 min] load averages or null, "
                                      f"got {v!r}")
    foreign = conditions.get("foreign_cpu")
    if foreign is not None:
        if not isinstance(foreign, dict):
            fail("conditions.foreign_cpu", f"must be an object or null, got {foreign!r}")
        for key in FOREIGN_CPU_FIELDS:
            v = foreign.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not 0.0 <= v <= 1.0):
                fail(f"conditions.foreign_cpu.{key}", f"must be a fraction in [0, 1] or null, "
                                                      f"got {v!r}")


# --------------------------------------------------------------------------------------------
# The loaded trace


@dataclass(frozen=True, eq=False)
class Trace:
    """A validated trace as arrays, one entry (or row) per request in replay order.

    Per-request arrays have shape ``(n_requests,)``; outcome matrices have shape
    ``(n_requests, n_targets)`` with columns in ``targets`` order and ``NaN`` where the trace has
    no row for that (request, target). All arrays are read-only.
    """

    path: str
    header: TraceHeader
    targets: tuple[Target, ...]
    workloads: tuple[Workload, ...]
    """The workload catalog; ``network`` indexes it."""
    request: np.ndarray
    """int64 request ids, ascending."""
    timestamp_s: np.ndarray
    network: np.ndarray
    """int64 index into ``workloads``."""
    co_cpu_pct: np.ndarray
    co_mem_pct: np.ndarray
    rssi_wifi_dbm: np.ndarray
    rssi_p2p_dbm: np.ndarray
    latency_ms: np.ndarray
    energy_mj: np.ndarray
    accuracy: np.ndarray
    energy_source: np.ndarray
    """str (n_requests, n_targets): each cell's source, ``""`` where not recorded."""

    @property
    def n_requests(self) -> int:
        """Number of requests."""
        return len(self.request)

    @property
    def target_names(self) -> list[str]:
        """Target names in action order."""
        return [str(t) for t in self.targets]

    @property
    def complete(self) -> bool:
        """True when every target's outcome of every request is known (the oracle is)."""
        return bool(np.isfinite(self.latency_ms).all())

    def request_energy_source(self) -> np.ndarray:
        """One energy source per request (a block carries one).

        The value its recorded cells share, or, when they differ (a live recording that metered
        local targets and modelled remote ones), the first of them in
        :data:`~autoscale_env.world.types.ENERGY_SOURCES` order (``model`` before measured sources: the
        label never claims more precision than every cell has).
        """
        out = np.empty(self.n_requests, dtype=object)
        rank = {s: k for k, s in enumerate(ENERGY_SOURCES)}
        for i, row in enumerate(self.energy_source):
            seen = {s for s in row.tolist() if s}
            out[i] = min(seen, key=rank.__getitem__) if seen else "none"
        return out


# --------------------------------------------------------------------------------------------
# Finding traces


def bundled_root():
    """Where the bundled traces are: when ``autoscale_env`` is imported from a source checkout
    (tests run from the repository root, or another worktree than the one installed in editable
    mode), that checkout's ``traces/`` folder; else the installed ``autoscale_env.bundled_traces``
    package."""
    checkout = Path(__file__).resolve().parents[2] / "traces"
    if (checkout / "__init__.py").is_file():
        return checkout
    return resources.files(BUNDLED_PACKAGE)


def bundled_traces() -> list[str]:
    """Names of the traces shipped with the package (file names without their suffix)."""
    root = bundled_root()
    names = []
    for entry in root.iterdir():
        for suffix in SUFFIXES:
            if entry.name.endswith(suffix) and entry.is_file():
                names.append(entry.name[: -len(suffix)])
    return sorted(names)


def _bundled_entry(name: str):
    root = bundled_root()
    for candidate in [name] + [name + s for s in SUFFIXES]:
        if "/" in candidate or "\\" in candidate:
            continue
        entry = root / candidate
        if entry.is_file() and candidate.endswith(SUFFIXES):
            return entry
    return None


def resolve_trace(trace: str | os.PathLike) -> str:
    """A path or bundled trace name -> the file's location (a path string).

    An existing file wins over a bundled trace of the same name. Unknown names raise
    :class:`~autoscale_env.world.errors.UnknownNameError` listing the bundled traces.
    """
    path = Path(trace)
    if path.is_file():
        return str(path)
    entry = _bundled_entry(str(trace))
    if entry is not None:
        return str(entry)
    raise UnknownNameError("trace", str(trace),
                           bundled_traces() + ["<path to a .csv, .csv.gz or .parquet trace>"])


#: Largest trace read, bytes: the file itself and, for ``.csv.gz``, what it expands to; a Parquet
#: file's declared uncompressed size too. Checked before the bulk read or the decompression gets
#: there, so a decompression bomb costs at most this much memory. A recorded request takes
#: about 1.4 KB of CSV (the 2,000-request bundled traces expand to 2.7 MB), so the default
#: admits about 90,000 requests; set ``AUTOSCALE_MAX_TRACE_MB`` to read longer recordings.
MAX_TRACE_BYTES = 128 * 1024 * 1024
_LIMIT_HINT = "set AUTOSCALE_MAX_TRACE_MB to read a larger trace you trust"


def _max_trace_bytes() -> int:
    raw = os.environ.get("AUTOSCALE_MAX_TRACE_MB")
    if raw:
        try:
            return int(float(raw) * 1024 * 1024)
        except ValueError:
            raise TraceFormatError(f"AUTOSCALE_MAX_TRACE_MB={raw!r} is not a number") from None
    return MAX_TRACE_BYTES
_CHUNK = 1 << 20
#: CSV rows parsed into column arrays at a time (bounds the per-row lists held at once).
_PARSE_CHUNK_ROWS = 1 << 16


def _read_bytes(trace: str | os.PathLike) -> tuple[str, bytes]:
    path = Path(trace)
    if path.is_file():  # is_file: a FIFO or /dev/zero is not one (and falls through to a name)
        size, limit = path.stat().st_size, _max_trace_bytes()
        if size > limit:
            _fail(f"{path}: {size} bytes exceeds the limit of {limit} bytes for a trace "
                  f"({_LIMIT_HINT})", path=str(path))
        with open(path, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            _fail(f"{path}: exceeds the limit of {limit} bytes for a trace ({_LIMIT_HINT})",
                  path=str(path))
        return str(path), data
    entry = _bundled_entry(str(trace))
    if entry is not None:  # read through importlib.resources: works from wheels and zips too
        return str(entry), entry.read_bytes()
    resolve_trace(trace)  # raises the UnknownNameError
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Reading


def _fail(message: str, *, path: str = "", row: int | None = None, column: str | None = None):
    error = TraceFormatError(message)
    error.path, error.row, error.column = path, row, column
    raise error


def load_trace(trace: str | os.PathLike, *, workloads: dict[str, Workload] | None = None) -> Trace:
    """Read and validate a trace.

    Args:
        trace: a path (``.csv``, ``.csv.gz``, ``.parquet``; the format is detected from the
            content) or the name of a bundled trace (see :func:`bundled_traces`).
        workloads: the network catalog to validate against (default: ``workloads.toml``).

    Returns:
        The trace, requests in ascending id order.

    Raises:
        TraceFormatError: the file is malformed; the message names the file, row and column.
        UnknownNameError: ``trace`` is neither a file nor a bundled trace.
        DependencyMissing: a Parquet file without ``pyarrow`` installed.

    Warns:
        TraceCutWarning: the file ends inside a line or a gzip member (a killed recording); the
            complete rows were loaded, and, in a full trace, the last request if it had only
            some of its target rows was dropped.
    """
    path, data = _read_bytes(trace)
    catalog = config.load_workloads() if workloads is None else workloads
    if data[:4] == b"PAR1":
        pa, _ = _import_pyarrow()
        try:
            header, columns, where = _parquet_columns(data, path)
        except TraceFormatError:
            raise
        except (pa.ArrowException, ValueError, OSError, KeyError, IndexError, TypeError,
                NotImplementedError) as e:  # a damaged file can fail anywhere inside pyarrow
            _fail(f"{path}: not a readable Parquet trace ({type(e).__name__}: {e})", path=path)
        return _assemble(path, header, columns, where, catalog)
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, path)
    text = _csv_text(data, path)
    del data  # the text holds it all now: not both at once
    header, columns, where = _csv_columns(text, path)
    return _assemble(path, header, columns, where, catalog)


def _gunzip(data: bytes, path: str) -> bytes:
    """Decompress every gzip member; a last member cut short yields what it holds.

    Output is produced in 1 MiB steps and counted, so an input expanding past
    :data:`MAX_TRACE_BYTES` is refused when it gets there, not after it filled memory.
    """
    out, view, pos, total, limit = [], memoryview(data), 0, 0, _max_trace_bytes()

    def take(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)
        if total > limit:
            _fail(f"{path}: the gzip data expands to more than {limit} bytes, the limit for a "
                  f"trace ({_LIMIT_HINT})", path=path)
        out.append(chunk)

    while pos < len(data):
        d = zlib.decompressobj(wbits=31)  # 31: one gzip member (header and CRC checked)
        pending = view[pos:]
        try:
            while not d.eof:
                chunk = d.decompress(pending, _CHUNK)
                take(chunk)
                if not chunk and len(d.unconsumed_tail) == len(pending):
                    # no input left to use and no output: the stream stops inside this member
                    take(d.flush())
                    warnings.warn(f"{path}: the gzip stream ends inside a member at byte "
                                  f"{len(data)} (a cut recording?); loading the complete lines "
                                  f"before the cut", TraceCutWarning, stacklevel=3)
                    return b"".join(out)
                pending = d.unconsumed_tail
        except zlib.error as e:
            _fail(f"{path}: byte {pos}: not a valid gzip member ({e})", path=path)
        pos = len(data) - len(d.unused_data)
    return b"".join(out)


def _csv_text(raw: bytes, path: str) -> str:
    """The complete lines of a CSV trace as text (a torn last line dropped with a warning)."""
    # Every complete line ends with "\n", so the bytes after the last one are a torn line (cut
    # before decoding: a cut may also split a multi-byte character).
    end = raw.rfind(b"\n") + 1
    torn, raw = raw[end:], raw[:end]
    if torn.strip():
        n_complete = raw.count(b"\n")
        warnings.warn(f"{path}: line {n_complete + 1} has no end-of-line (a cut recording?); "
                      f"dropped it and kept the {n_complete} complete lines before it",
                      TraceCutWarning, stacklevel=3)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        _fail(f"{path}, line {line}: not UTF-8 text ({e.reason} at byte {e.start})", path=path)
    return text


def _csv_columns(text: str, path: str):
    lines = _lines(text)
    first = next(lines, None)
    if first is None or not first.startswith(HEADER_PREFIX.rstrip()):
        _fail(f"{path}, line 1: the first line must be the header '{HEADER_PREFIX}{{...json...}}' "
              f"(see traces/README.md), got {(first or '')[:60]!r}", path=path, row=0)
    where_header = f"{path}, line 1 (header)"
    try:
        data = json.loads(first[len(HEADER_PREFIX.rstrip()):])
    except (json.JSONDecodeError, RecursionError) as e:
        _fail(f"{where_header}: not valid JSON: {e}", path=path, row=0)
    header = TraceHeader.from_dict(data, where_header)

    names: list[str] | None = None
    names_line = 0
    # Rows are converted to column arrays in chunks: a list of fields per row costs ~1 kB, so
    # holding every row's fields at once would take gigabytes for a long trace.
    pending: list[list[str]] = []
    parts: dict[str, list[np.ndarray]] = {}
    line_of = array("q")
    interned: dict[str, str] = {}  # names repeat on every row: one string object each

    def where(i: int) -> tuple[str, int]:
        return f"{path}, row {i + 1} (line {line_of[i]})", i + 1

    def flush() -> None:
        offset = len(line_of) - len(pending)
        by_column = list(zip(*pending, strict=True))
        for name in COLUMN_NAMES:
            values = by_column[names.index(name)]
            if _BY_NAME[name].kind == "str":
                part = np.array([interned.setdefault(v, v) for v in map(str.strip, values)],
                                dtype=object)
            else:
                part = _convert(values, _BY_NAME[name].kind, name,
                                lambda i: where(offset + i), path)
            parts.setdefault(name, []).append(part)
        pending.clear()

    for number, line in enumerate(lines, start=2):
        line = line.rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        try:  # plain split unless quoted (the writer never quotes: no field holds a comma)
            fields = line.split(",") if '"' not in line else next(csv.reader([line]))
        except csv.Error as e:
            _fail(f"{path}, line {number}: not a CSV line ({e})", path=path)
        if names is None:
            names, names_line = [f.strip() for f in fields], number
            duplicate = next((n for n in names if names.count(n) > 1), None)
            if duplicate is not None:
                _fail(f"{path}, line {names_line} (column header): column '{duplicate}' appears "
                      f"twice", path=path, row=0, column=duplicate)
            for required in COLUMN_NAMES:
                if required not in names:
                    _fail(f"{path}, line {names_line} (column header): column '{required}' is "
                          f"missing (required: {', '.join(COLUMN_NAMES)})", path=path, row=0,
                          column=required)
            continue
        if len(fields) != len(names):
            row = len(line_of) + 1
            column = names[len(fields)] if len(fields) < len(names) else None
            detail = (f"column '{column}' is missing (the row has {len(fields)} fields, the column "
                      f"header on line {names_line} has {len(names)})" if column else
                      f"has {len(fields)} fields, the column header on line {names_line} has "
                      f"{len(names)}")
            _fail(f"{path}, row {row} (line {number}): {detail}", path=path, row=row,
                  column=column)
        pending.append(fields)
        line_of.append(number)
        if len(pending) == _PARSE_CHUNK_ROWS:
            flush()
    if names is None:
        _fail(f"{path}: no column header line after the header (expected "
              f"'{','.join(COLUMN_NAMES)}')", path=path, row=0)
    if pending:
        flush()
    columns: dict[str, Any] = {}
    for name in COLUMN_NAMES:
        kind = _BY_NAME[name].kind
        empty = np.empty(0, dtype=object if kind == "str" else
                         np.int64 if kind == "int" else np.float64)
        columns[name] = np.concatenate(parts[name]) if name in parts else empty
    return header, columns, where


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` (each ended by "\n"), one at a time: a list of them all would
    double the memory a long trace takes."""
    start, end = 0, len(text)
    while start < end:
        stop = text.find("\n", start)
        if stop < 0:
            stop = end
        yield text[start:stop]
        start = stop + 1


def _convert(values: Sequence[str], kind: str, name: str, where, path: str) -> np.ndarray:
    convert = int if kind == "int" else float  # Python's parsers: correctly rounded
    dtype = np.int64 if kind == "int" else np.float64
    try:
        return np.fromiter(map(convert, values), dtype=dtype, count=len(values))
    except (ValueError, OverflowError, TypeError):
        pass
    out = np.empty(len(values), dtype=dtype)
    for i, v in enumerate(values):  # slow path: find the first bad cell to name it
        try:
            out[i] = convert(v)
        except (ValueError, OverflowError, TypeError):
            text, row = where(i)
            expected = "an integer" if kind == "int" else "a number"
            _fail(f"{text}, column '{name}': must be {expected}, got {v[:40]!r}", path=path,
                  row=row, column=name)
    raise AssertionError("unreachable")


def _import_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DependencyMissing("pyarrow", "parquet", "Parquet traces") from None
    return pa, pq


def _parquet_columns(data: bytes, path: str):
    pa, pq = _import_pyarrow()
    try:  # the footer declares every row group's uncompressed size: check it before reading
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    except (pa.ArrowException, OSError, ValueError) as e:
        _fail(f"{path}: not a readable Parquet file ({e})", path=path)
    if declared > _max_trace_bytes():
        _fail(f"{path}: the Parquet data declares {declared} uncompressed bytes, over the limit "
              f"of {_max_trace_bytes()} bytes for a trace ({_LIMIT_HINT})", path=path)
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as e:
        _fail(f"{path}: not a readable Parquet file ({e})", path=path)
    meta = table.schema.metadata or {}
    if PARQUET_METADATA_KEY not in meta:
        _fail(f"{path}: the Parquet schema metadata has no {PARQUET_METADATA_KEY.decode()!r} "
              f"key holding the header JSON", path=path, row=0)
    where_header = f"{path}, schema metadata '{PARQUET_METADATA_KEY.decode()}' (header)"
    try:
        data_header = json.loads(meta[PARQUET_METADATA_KEY])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        _fail(f"{where_header}: not valid JSON: {e}", path=path, row=0)
    header = TraceHeader.from_dict(data_header, where_header)

    def where(i: int) -> tuple[str, int]:
        return f"{path}, row {i + 1}", i + 1

    columns: dict[str, Any] = {}
    for name in COLUMN_NAMES:
        if name not in table.column_names:
            _fail(f"{path}: column '{name}' is missing (required: {', '.join(COLUMN_NAMES)})",
                  path=path, row=0, column=name)
        col = table.column(name)
        if col.null_count:
            first = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
            text, row = where(first)
            _fail(f"{text}, column '{name}': is empty (null)", path=path, row=row, column=name)
        kind, t = _BY_NAME[name].kind, col.type
        if pa.types.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        ok = {"int": pa.types.is_integer(t),
              "float": pa.types.is_floating(t) or pa.types.is_integer(t),
              "str": pa.types.is_string(t) or pa.types.is_large_string(t)}[kind]
        if not ok:
            expected = {"int": "an integer type", "float": "a numeric type", "str": "string"}[kind]
            _fail(f"{path}, row 1, column '{name}': has type {t}, expected {expected}",
                  path=path, row=1, column=name)
        if kind == "str":
            columns[name] = np.array([v.strip() for v in col.to_pylist()], dtype=object)
        else:
            values = col.to_numpy()
            if kind == "int" and pa.types.is_unsigned_integer(t) and len(values) and \
                    values.max() > np.iinfo(np.int64).max:
                _fail(f"{path}, column '{name}': integer too large", path=path, column=name)
            columns[name] = values.astype(np.int64 if kind == "int" else np.float64)
    return header, columns, where


# --------------------------------------------------------------------------------------------
# Validation shared by the formats


def _assemble(path: str, header: TraceHeader, cols: dict[str, np.ndarray],
              where: Callable[[int], tuple[str, int]], catalog: dict[str, Workload]) -> Trace:
    """Check values and structure, then build the request-major :class:`Trace`."""

    def bad(i: int, name: str, problem: str) -> None:
        text, row = where(int(i))
        _fail(f"{text}, column '{name}': {problem}", path=path, row=row, column=name)

    n_rows = len(cols["request"])
    # Numbers: finite and in range.
    for c in COLUMNS:
        if c.kind == "str":
            continue
        v = cols[c.name]
        if c.kind == "float":
            wrong = ~np.isfinite(v)
            if wrong.any():
                i = int(np.argmax(wrong))
                bad(i, c.name, f"must be a finite number, got {v[i].item()!r}")
        for limit, op, word in ((c.low, np.less, ">="), (c.high, np.greater, "<=")):
            if limit is not None:
                wrong = op(v, limit)
                if wrong.any():
                    i = int(np.argmax(wrong))
                    unit = f" {c.unit}" if c.unit and c.unit != "layers" else ""
                    bad(i, c.name, f"must be {word} {limit:g}{unit}, got {v[i].item()!r}")

    # Names: networks from the catalog, energy sources from the closed set.
    networks = list(catalog)
    net_index = {n: k for k, n in enumerate(networks)}
    network = np.empty(n_rows, dtype=np.int64)
    for i, name in enumerate(cols["network"].tolist()):
        k = net_index.get(name)
        if k is None:
            bad(i, "network",
                f"{name[:40]!r} is not a catalog network; valid: {', '.join(networks)}")
        network[i] = k
    for i, s in enumerate(cols["energy_source"].tolist()):
        if s not in ENERGY_SOURCES:
            bad(i, "energy_source", f"{s[:40]!r} is not one of {', '.join(ENERGY_SOURCES)}")
    # Layer counts must be the catalog's: the environment bins the catalog's counts, so a trace
    # disagreeing with it would be replayed under another state than the one it claims.
    wl = tuple(catalog.values())
    for name in ("conv", "fc", "rc"):
        expected = np.array([getattr(w, name) for w in wl], dtype=np.int64)[network]
        wrong = cols[name] != expected
        if wrong.any():
            i = int(np.argmax(wrong))
            bad(i, name, f"is {cols[name][i]} but the catalog's {networks[network[i]]} has "
                         f"{expected[i]} (workloads.toml)")

    # Targets: the header's list, else the profile's, else first appearance.
    profile = _bundled_profile(header.device)
    names_in_rows = cols["target"].tolist()
    if header.targets:
        target_names = list(header.targets)
    elif profile is not None:
        target_names = [str(t) for t in profile.targets]
    else:
        target_names = list(dict.fromkeys(names_in_rows))
        for name in target_names:
            try:
                Target.parse(name)
            except ValueError as e:
                bad(names_in_rows.index(name), "target", str(e))
    if profile is not None:
        offered = {str(t) for t in profile.targets}
        extra = [t for t in target_names if t not in offered]
        if extra:
            _fail(f"{path}: header field 'targets' lists {extra[0]!r}, which device "
                  f"{header.device!r} does not offer ({', '.join(sorted(offered))})",
                  path=path, row=0, column="targets")
    t_index = {n: k for k, n in enumerate(target_names)}
    target = np.empty(n_rows, dtype=np.int64)
    for i, name in enumerate(names_in_rows):
        k = t_index.get(name)
        if k is None:
            bad(i, "target", f"{name[:40]!r} is not a target of this trace; valid: "
                             f"{', '.join(target_names)}")
        target[i] = k
    T = len(target_names)

    # Requests: group rows, refuse duplicates and rows disagreeing on their request's context.
    request = cols["request"]
    ids, first, inverse = np.unique(request, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    key = inverse * T + target
    order = np.argsort(key, kind="stable")
    same = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(same):
        a, b = sorted((order[same[0]], order[same[0] + 1]))
        other, _ = where(int(a))
        bad(b, "target", f"request {request[b]} already has a row for {names_in_rows[b]!r} "
                         f"({other.split(', ', 1)[1]}): duplicate (request, target)")
    lead = first[inverse]
    for name in _CONTEXT:
        v = cols[name]
        wrong = v != v[lead]
        if wrong.any():
            i = int(np.argmax(wrong))
            other, _ = where(int(lead[i]))
            bad(i, name, f"is {v[i]!r} but {v[lead[i]]!r} on the first row of request "
                         f"{request[i]} ({other.split(', ', 1)[1]}): a request's rows must share "
                         f"its context")

    n = len(ids)
    shape = (n, T)
    latency, energy, accuracy = (np.full(shape, np.nan) for _ in range(3))
    source = np.full(shape, "", dtype=object)
    latency[inverse, target] = cols["latency_ms"]
    energy[inverse, target] = cols["energy_mj"]
    accuracy[inverse, target] = cols["accuracy"]
    source[inverse, target] = cols["energy_source"]
    keep = np.ones(n, dtype=bool)
    if header.coverage == "full" and n:
        counts = np.bincount(inverse, minlength=n)
        short = np.flatnonzero(counts < T)
        last = int(inverse[-1]) if n_rows else -1
        if len(short) and short[-1] == last:
            # A killed recording: its last request lost some target rows. Drop it, keep the rest.
            # (Also when the cut fell exactly on a line end, which leaves no torn line.)
            warnings.warn(f"{path}: the last request ({ids[last]}) has {counts[last]} of {T} "
                          f"target rows (a cut recording?); dropped it", TraceCutWarning,
                          stacklevel=3)
            keep[last] = False
            short = short[:-1]
        if len(short):
            j = int(short[0])
            missing = [target_names[k] for k in range(T) if np.isnan(latency[j, k])]
            bad(first[j], "target", f"request {ids[j]} has no row for target {missing[0]!r}, but "
                                    f"the header says coverage 'full' (a log that records only "
                                    f"the chosen target must say \"coverage\": \"partial\")")
    rows = first[keep]

    def ro(a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a)
        a.flags.writeable = False
        return a

    return Trace(
        path=path, header=header, targets=tuple(Target.parse(t) for t in target_names),
        workloads=wl, request=ro(ids[keep]), timestamp_s=ro(cols["timestamp_s"][rows]),
        network=ro(network[rows]),
        **{name: ro(cols[name][rows]) for name in _FLOATS},
        latency_ms=ro(latency[keep]), energy_mj=ro(energy[keep]), accuracy=ro(accuracy[keep]),
        energy_source=ro(source[keep]),
    )


def _bundled_profile(device: str) -> config.DeviceProfile | None:
    """The device's profile when ``device`` names a bundled phone, else None."""
    if device not in config.device_names():
        return None
    return config.load_device(device)


# --------------------------------------------------------------------------------------------
# Writing


def _format(x: float) -> str:
    return repr(float(x))  # shortest round-trip form: read back bit for bit


class TraceWriter:
    """Append-only CSV / gzip-CSV trace writer; after every :meth:`flush` the file loads.

    The header and the column line are written and synced on creation. Rows are buffered and
    :meth:`flush` appends them (as one more gzip member for ``.csv.gz``), then syncs, so a
    recording killed at any moment leaves every flushed row readable and, at worst, one torn
    line or member at the end, which :func:`load_trace` drops with a warning.

    Args:
        path: ``.csv`` or ``.csv.gz`` file to create.
        header: the trace header (its ``targets`` fix the column order of the outcome matrices).
        workloads: the catalog ``network`` indices refer to (default ``workloads.toml``).
        force: replace an existing file; without it an existing file raises ``FileExistsError``.
    """

    def __init__(self, path: str | os.PathLike, header: TraceHeader, *,
                 workloads: Sequence[Workload] | None = None, force: bool = False):
        self.path = Path(path)
        name = self.path.name
        if not name.endswith((".csv", ".csv.gz")):
            raise ValueError(f"{self.path}: a recorded trace must end in .csv or .csv.gz (Parquet "
                             f"files are written whole by write_trace)")
        if not header.targets:
            raise ValueError("TraceWriter needs header.targets (the outcome columns' order)")
        self.header = header
        self._gzip = name.endswith(".gz")
        self._workloads = tuple(config.load_workloads().values()) if workloads is None \
            else tuple(workloads)
        self._targets = list(header.targets)
        try:  # kept open for appending until close(): no context manager on purpose
            self._file = open(self.path, "wb" if force else "xb")  # noqa: SIM115
        except FileExistsError:
            raise FileExistsError(f"{self.path} already exists; refusing to overwrite a "
                                  f"recording (pass force=True / --force to replace it)") from None
        self._lines: list[str] = [HEADER_PREFIX + header.to_json() + "\n",
                                  ",".join(COLUMN_NAMES) + "\n"]
        self.rows_written = 0
        self.requests_written = 0
        self.flush()
        fsync_directory(self.path.parent)  # the new directory entry survives a crash too

    def write_requests(self, *, request: Sequence[int], timestamp_s: Sequence[float],
                       network: Sequence[int], co_cpu_pct: Sequence[float],
                       co_mem_pct: Sequence[float], rssi_wifi_dbm: Sequence[float],
                       rssi_p2p_dbm: Sequence[float], latency_ms: np.ndarray,
                       energy_mj: np.ndarray, accuracy: np.ndarray,
                       energy_source: str | np.ndarray) -> None:
        """Buffer requests: one row per target whose latency is not NaN.

        Args:
            request: request ids, one per request (as are the context arguments below).
            timestamp_s: arrival times, s.
            network: indices into the catalog.
            co_cpu_pct: co-running CPU utilisation, %.
            co_mem_pct: co-running memory use, %.
            rssi_wifi_dbm: Wi-Fi signal strength, dBm.
            rssi_p2p_dbm: Wi-Fi Direct signal strength, dBm.
            latency_ms: ``(n, n_targets)`` latency in ``header.targets`` order (NaN: no row).
            energy_mj: ``(n, n_targets)`` phone energy.
            accuracy: ``(n, n_targets)`` accuracy fraction.
            energy_source: one value for all, or ``(n, n_targets)``.
        """
        lat = np.asarray(latency_ms, dtype=float).tolist()
        en = np.asarray(energy_mj, dtype=float).tolist()
        acc = np.asarray(accuracy, dtype=float).tolist()
        src = None if isinstance(energy_source, str) else np.asarray(energy_source).tolist()
        targets, wl = self._targets, self._workloads
        ctx = zip(np.asarray(request).tolist(), np.asarray(timestamp_s, float).tolist(),
                  np.asarray(network).tolist(), np.asarray(co_cpu_pct, float).tolist(),
                  np.asarray(co_mem_pct, float).tolist(), np.asarray(rssi_wifi_dbm, float).tolist(),
                  np.asarray(rssi_p2p_dbm, float).tolist(), strict=True)
        out = self._lines
        for i, (req, ts, net, cpu, mem, wifi, p2p) in enumerate(ctx):
            w = wl[net]
            prefix = (f"{int(req)},{_format(ts)},{w.name},{w.conv},{w.fc},{w.rc},{_format(cpu)},"
                      f"{_format(mem)},{_format(wifi)},{_format(p2p)},")
            rows_before = self.rows_written
            for k, t in enumerate(targets):
                latency = lat[i][k]
                if math.isnan(latency):  # not recorded for this target
                    continue
                s = energy_source if src is None else src[i][k]
                out.append(f"{prefix}{t},{_format(latency)},{_format(en[i][k])},"
                           f"{_format(acc[i][k])},{s}\n")
                self.rows_written += 1
            self.requests_written += self.rows_written > rows_before

    def flush(self) -> None:
        """Append the buffered rows to the file and sync it to disk."""
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8")
        self._lines = []
        if self._gzip:  # one complete member per flush: a kill can only tear the last one
            data = gzip.compress(data, compresslevel=9, mtime=0)
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush and close (safe to call twice)."""
        if not self._file.closed:
            self.flush()
            self._file.close()

    def __enter__(self) -> Self:
        """Use as a context manager; :meth:`close` on exit."""
        return self

    def __exit__(self, *exc) -> None:
        """Close (flushing the buffered rows, also when an exception ends the recording)."""
        self.close()




def write_trace(trace: Trace, path: str | os.PathLike, *, header: TraceHeader | None = None,
                force: bool = False) -> Path:
    """Write a whole trace (``.csv``, ``.csv.gz`` or ``.parquet``) atomically.

    The file is written next to ``path`` under a temporary name and renamed into place, so
    ``path`` holds either nothing new or the complete trace. Cells whose latency is NaN are not
    written (that is how a partial trace is made from a full one).

    Args:
        trace: what to write.
        path: destination; the suffix picks the format.
        header: header to write instead of ``trace.header`` (e.g. with ``coverage="partial"``).
        force: replace an existing file.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; pass force=True to replace it")
    header = header or trace.header
    if not header.targets:
        header = _replace_targets(header, trace.target_names)
    suffix = next((s for s in SUFFIXES if path.name.endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{path}: a trace file name must end in {', '.join(SUFFIXES)}")
    with atomic_writer(path, suffix=".tmp" + suffix) as f:
        if suffix == ".parquet":
            _write_parquet(trace, header, f)
        else:  # TraceWriter appends to the temp file by name (its own handle)
            with TraceWriter(f.name, header, workloads=trace.workloads, force=True) as w:
                w.write_requests(
                    request=trace.request, timestamp_s=trace.timestamp_s, network=trace.network,
                    co_cpu_pct=trace.co_cpu_pct, co_mem_pct=trace.co_mem_pct,
                    rssi_wifi_dbm=trace.rssi_wifi_dbm, rssi_p2p_dbm=trace.rssi_p2p_dbm,
                    latency_ms=trace.latency_ms, energy_mj=trace.energy_mj,
                    accuracy=trace.accuracy, energy_source=trace.energy_source)
    return path


def _replace_targets(header: TraceHeader, targets: Sequence[str]) -> TraceHeader:
    from dataclasses import replace
    return replace(header, targets=tuple(targets))


def _write_parquet(trace: Trace, header: TraceHeader, path: Path | Any) -> None:
    pa, pq = _import_pyarrow()
    known = np.argwhere(np.isfinite(trace.latency_ms))  # (request, target) pairs, request-major
    i, k = known[:, 0], known[:, 1]
    wl = trace.workloads
    net = trace.network[i]
    names = np.array([w.name for w in wl], dtype=object)
    layers = {f: np.array([getattr(w, f) for w in wl], dtype=np.int64)[net]
              for f in ("conv", "fc", "rc")}
    targets = np.array(trace.target_names, dtype=object)
    columns = {
        "request": trace.request[i], "timestamp_s": trace.timestamp_s[i],
        "network": names[net].tolist(), **layers,
        **{f: getattr(trace, f)[i] for f in _FLOATS},
        "target": targets[k].tolist(), "latency_ms": trace.latency_ms[i, k],
        "energy_mj": trace.energy_mj[i, k], "accuracy": trace.accuracy[i, k],
        "energy_source": trace.energy_source[i, k].tolist(),
    }
    types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    schema = pa.schema([(c.name, types[c.kind]) for c in COLUMNS],
                       metadata={PARQUET_METADATA_KEY: header.to_json().encode()})
    table = pa.table({c.name: pa.array(columns[c.name], type=types[c.kind]) for c in COLUMNS},
                     schema=schema)
    pq.write_table(table, path)


# --------------------------------------------------------------------------------------------
# A small cache: every sub-env of a vector env replays the same file


@lru_cache(maxsize=32)
def _cached(location: str, mtime_ns: int, size: int) -> Trace:
    return load_trace(location)


def load_trace_cached(trace: str | os.PathLike) -> Trace:
    """:func:`load_trace`, cached per file (keyed by location, size and modification time).

    Traces are immutable (read-only arrays), so envs may share one.
    """
    location = resolve_trace(trace)
    try:
        st = os.stat(location)
        return _cached(location, st.st_mtime_ns, st.st_size)
    except OSError:  # a bundled trace inside a zip: not cacheable by stat
        return load_trace(trace)


__all__ = [
    "COLUMNS", "COLUMN_NAMES", "COVERAGES", "FORMAT", "HEADER_PREFIX", "SUFFIXES", "VERSION",
    "CONDITION_FIELDS", "Column", "FOREIGN_CPU_FIELDS", "Trace", "TraceCutWarning", "TraceHeader", "TraceWriter", "bundled_traces",
    "load_trace", "load_trace_cached", "resolve_trace", "write_trace",
]
