"""Load and validate the data files that define the world (devices, workloads, links, scenarios,
settings, observation bins, reward presets).

Everything is TOML inside ``autoscale_env/data``; a user adds a phone by writing one more device file
(pass its path as ``device=``). Files are parsed and checked once (cached); every problem raises
:class:`~autoscale_env.world.errors.ConfigError` naming the file, the field and what was expected.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from autoscale_env.world.types import PRECISIONS, PROCESSORS, Scenario, Target, Workload
from autoscale_env.world.errors import ConfigError, UnknownNameError

DATA_DIR = Path(str(resources.files("autoscale_env") / "data"))
DEVICES_DIR = DATA_DIR / "devices"
SETTINGS = ("static", "dynamic")
UNITS = tuple(f"{p}/{q}" for p in PROCESSORS for q in PRECISIONS)


# --------------------------------------------------------------------------------------------
# A small checked reader over one TOML table


class _Table:
    """One TOML table with typed, named accessors; errors name file and dotted field."""

    def __init__(self, data: Any, path: Path | str, where: str = ""):
        self.path = str(path)
        self.where = where
        if not isinstance(data, dict):
            self.fail("", f"must be a table, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, problem: str) -> None:
        name = self.field(key) if key else (self.where or "<top level>")
        raise ConfigError(f"{self.path}: field '{name}' {problem}")

    def _get(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                self.fail(key, "is missing")
            return default
        return self.data[key]

    def str(self, key: str, default: Any = ...) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {value!r}")
        return value

    def number(self, key: str, default: Any = ..., *, minimum: float | None = 0.0,
               maximum: float | None = None, positive: bool = False) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            self.fail(key, f"must be finite, got {value!r}")
        if positive and value <= 0:
            self.fail(key, f"must be > 0, got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum:g}, got {value!r}")
        if maximum is not None and value > maximum:
            self.fail(key, f"must be <= {maximum:g}, got {value!r}")
        return value

    def integer(self, key: str, default: Any = ..., *, minimum: int = 0) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {value!r}")
        if value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value!r}")
        return value

    def boolean(self, key: str, default: Any = ...) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {value!r}")
        return value

    def numbers(self, key: str, default: Any = ..., *, length: int | None = None,
                minimum: float | None = None) -> tuple[float, ...]:
        value = self._get(key, default)
        if not isinstance(value, list) or not value:
            self.fail(key, f"must be a non-empty list of numbers, got {value!r}")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                self.fail(key, f"item {i} must be a finite number, got {item!r}")
            if minimum is not None and item < minimum:
                self.fail(key, f"item {i} must be >= {minimum:g}, got {item!r}")
            out.append(float(item))
        if length is not None and len(out) != length:
            self.fail(key, f"must have {length} items, got {len(out)}")
        return tuple(out)

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self._get(key, default)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.fail(key, f"must be a non-empty list of strings, got {value!r}")
        return tuple(value)

    def table(self, key: str) -> _Table:
        return _Table(self._get(key), self.path, self.field(key))

    def source(self, key: str = "source") -> str:
        text = self.str(key)
        if not text.strip():
            self.fail(key, "must say where the numbers come from, or 'estimate: <reason>'")
        return text

    def provenance(self) -> None:
        """Check the optional per-number provenance of this table (see ``docs/calibration.md``,
        "Provenance fields"): ``source`` (for every number without its own entry), ``sources``
        (field -> text) and ``ranges`` (field -> ``[lo, hi]``, or one ``[lo, hi]`` per item of a
        list field). Read by :mod:`autoscale_env.world.provenance`; the world itself ignores them."""
        if "source" in self.data:
            self.source()
        sources = self._get("sources", {})
        if not isinstance(sources, dict):
            self.fail("sources", f"must be a table of field = \"text\", got {sources!r}")
        for key, text in sources.items():
            if key not in self.data or key in ("source", "sources", "ranges"):
                self.fail(f"sources.{key}", "names no numeric field of this table")
            if not isinstance(text, str) or not text.strip():
                self.fail(f"sources.{key}", "must say where the number comes from, or "
                                            "'estimate: <reason>'")
        ranges = self._get("ranges", {})
        if not isinstance(ranges, dict):
            self.fail("ranges", f"must be a table of field = [lo, hi], got {ranges!r}")
        for key, span in ranges.items():
            value = self.data.get(key)
            if isinstance(value, list):
                if (not isinstance(span, list) or len(span) != len(value)
                        or not all(_is_span(s) for s in span)):
                    self.fail(f"ranges.{key}", f"must be {len(value)} pairs [lo, hi] (one per "
                                               f"item of {key}), got {span!r}")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                if not _is_span(span):
                    self.fail(f"ranges.{key}", f"must be [lo, hi] with lo <= hi, got {span!r}")
            else:
                self.fail(f"ranges.{key}", "names no numeric field of this table")

    def done(self) -> None:
        """Refuse keys nobody read: a typo must not silently fall back to a default."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            self.fail(unknown[0], f"is not a known field here (known: {', '.join(sorted(self.used))})")


def _is_span(span: Any) -> bool:
    return (isinstance(span, list) and len(span) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                    for x in span) and span[0] <= span[1])


#: Largest TOML file (profile, features, catalog) read, bytes: the bundled ones are under 20 KB.
MAX_TOML_BYTES = 1024 * 1024
#: Deepest nesting of arrays/tables accepted in a TOML file (the bundled ones use 3).
MAX_TOML_DEPTH = 32


def _toml_depth(text: str) -> int:
    """Deepest bracket/brace nesting (brackets inside strings over-count: errs on the safe side)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def read_toml(path: Path) -> dict[str, Any]:
    import stat
    try:  # stat first: a FIFO would block open() forever, /dev/zero would never end
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file (a device, FIFO or socket); a TOML "
                              f"file must be a regular file")
        if st.st_size > MAX_TOML_BYTES:
            raise ConfigError(f"{path}: {st.st_size} bytes exceeds the limit of "
                              f"{MAX_TOML_BYTES} bytes for a TOML file")
        with open(path, "rb") as f:
            raw = f.read(MAX_TOML_BYTES + 1)
        if len(raw) > MAX_TOML_BYTES:  # it grew after the stat
            raise ConfigError(f"{path}: exceeds the limit of {MAX_TOML_BYTES} bytes for a TOML "
                              f"file")
        text = raw.decode("utf-8")
        depth = _toml_depth(text)
        if depth > MAX_TOML_DEPTH:
            raise ConfigError(f"{path}: nested {depth} levels deep, over the limit of "
                              f"{MAX_TOML_DEPTH} for a TOML file")
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to parse (limit {MAX_TOML_DEPTH})") \
            from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text ({e.reason} at byte "
                          f"{e.start})") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a TOML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror or e}") from None


def read_table(path: Path | str) -> _Table:
    """A TOML data file as a checked table: the reader behind every loader here, for data files
    that other modules own (``fleet.toml``). Its ``str`` / ``number`` / ``table`` / ... readers
    raise :class:`ConfigError` naming the file and field; ``done()`` refuses unknown fields."""
    return _Table(read_toml(Path(path)), path)


# --------------------------------------------------------------------------------------------
# Workloads


@lru_cache(maxsize=None)
def load_workloads(path: str | None = None) -> dict[str, Workload]:
    """The network catalog (``workloads.toml``), keyed by short name."""
    file = Path(path) if path else DATA_DIR / "workloads.toml"
    top = _Table(read_toml(file), file)
    nets = top.table("networks")
    out: dict[str, Workload] = {}
    for name in nets.data:
        t = nets.table(name)
        accuracy = {p: t.number(f"accuracy_{p}", maximum=1.0) for p in PRECISIONS}
        out[name] = Workload(
            name=name, display_name=t.str("display_name"),
            conv=t.integer("conv"), fc=t.integer("fc"), rc=t.integer("rc"),
            input_bytes=t.integer("input_bytes", minimum=1),
            output_bytes=t.integer("output_bytes", minimum=1),
            accuracy=accuracy, source=t.source(),
        )
        t.provenance()
        t.done()
    top.done()
    return out


# --------------------------------------------------------------------------------------------
# Devices


@dataclass(frozen=True)
class ProcessorPower:
    """Utilisation-based power of one on-device processor (W) and its sensitivity to co-runners."""

    busy_power_w: float
    idle_power_w: float
    cpu_interference: float
    """Latency grows by this factor x co-running CPU utilisation (0..1)."""
    mem_interference: float
    """Busy time grows by this factor x co-running memory use (0..1)."""


@dataclass(frozen=True)
class DeviceProfile:
    """A phone, edge device or cloud server profile (one file in ``data/devices``)."""

    name: str
    display_name: str
    kind: str
    soc: str
    targets: tuple[Target, ...]
    fallback_unit: str
    fallback_slowdown: float
    """Latency factor when a unit falls back to ``fallback_unit`` (delegate partitioning)."""
    latency_ms: dict[str, dict[str, float]]
    """network -> unit (``"gpu/fp16"``) -> ms, no interference."""
    processors: dict[str, ProcessorPower]
    base_power_w: float = 0.0
    wifi_active_w: float = 0.0
    overhead_ms: float = 0.0
    edge: str = ""
    cloud: str = ""
    path: str = ""

    def unit_latency_ms(self, network: str, unit: str) -> tuple[str, float]:
        """(unit that really runs, its latency): an unsupported unit falls back, a little slower."""
        row = self.latency_ms[network]
        if unit in row:
            return unit, row[unit]
        return self.fallback_unit, row[self.fallback_unit] * self.fallback_slowdown


KINDS = ("phone", "edge", "cloud")


def device_names(kind: str = "phone") -> list[str]:
    """Names of the bundled profiles of ``kind`` (phones: the valid ``device=`` values)."""
    return sorted(p.stem for p in DEVICES_DIR.glob("*.toml") if _kind_of(p) == kind)


def _kind_of(path: Path) -> str:
    try:
        return str(read_toml(path).get("kind", ""))
    except ConfigError:
        return ""


def resolve_device_path(name_or_path: str) -> Path:
    """A bundled device name, or a path to a user's profile file."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        return Path(name_or_path)
    path = DEVICES_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise UnknownNameError("device", name_or_path, device_names() + ["<path to a .toml profile>"])
    return path


@lru_cache(maxsize=None)
def load_device(name_or_path: str) -> DeviceProfile:
    """Load and validate one device profile; latency rows must cover every catalog network."""
    path = resolve_device_path(name_or_path)
    top = _Table(read_toml(path), path)
    kind = top.str("kind")
    if kind not in KINDS:
        top.fail("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    name = top.str("name")
    targets: list[Target] = []
    for i, t in enumerate(top.strings("targets")):
        try:
            targets.append(Target.parse(t))
        except ValueError as e:
            top.fail("targets", f"item {i}: {e}")
    if len(set(targets)) != len(targets):
        top.fail("targets", "lists a target twice")
    fallback = top.str("fallback_unit")
    if fallback not in UNITS:
        top.fail("fallback_unit", f"must be one of {', '.join(UNITS)}, got {fallback!r}")
    fallback_slowdown = top.number("fallback_slowdown", minimum=1.0)
    top.source("fallback_source")
    top.provenance()
    processors: dict[str, ProcessorPower] = {}
    base_power_w = wifi_active_w = overhead_ms = 0.0
    edge = cloud = ""
    if kind == "phone":
        base = top.table("base")
        base_power_w = base.number("power_w", positive=True)
        wifi_active_w = base.number("wifi_active_w", positive=True)
        base.source()
        base.provenance()
        base.done()
        edge, cloud = top.str("edge"), top.str("cloud")
        for field, value in (("edge", edge), ("cloud", cloud)):
            if value.endswith(".toml"):  # a profile file beside this one (autoscale calibrate)
                server = path.parent / value
                if _kind_of(server) != field:
                    top.fail(field, f"names {value!r}, but {server} is not a readable {field} "
                                    f"profile (kind = \"{field}\")")
                if field == "edge":
                    edge = str(server)
                else:
                    cloud = str(server)
            elif value not in device_names(field):
                top.fail(field, f"names {value!r}, not a bundled {field} profile; valid: "
                                f"{', '.join(device_names(field))} or a .toml file beside "
                                f"this profile")
        procs = top.table("processors")
        for proc in procs.data:
            if proc not in PROCESSORS:
                procs.fail(proc, f"is not a processor; valid: {', '.join(PROCESSORS)}")
            p = procs.table(proc)
            processors[proc] = ProcessorPower(
                busy_power_w=p.number("busy_power_w", positive=True),
                idle_power_w=p.number("idle_power_w"),
                cpu_interference=p.number("cpu_interference"),
                mem_interference=p.number("mem_interference"),
            )
            p.source()
            p.provenance()
            p.done()
        for t in targets:
            if t.is_local and t.processor not in processors:
                top.fail("processors", f"has no [processors.{t.processor}] for target {t}")
    else:
        overhead_ms = top.number("overhead_ms")
        top.source("overhead_source")
    if kind != "phone" and any(t.location != kind for t in targets):
        top.fail("targets", f"of a {kind} profile must all start with '{kind}/'")
    workloads = load_workloads()
    lat = top.table("latency_ms")
    latency: dict[str, dict[str, float]] = {}
    for net in lat.data:
        if net not in workloads:
            lat.fail(net, f"is not a catalog network; valid: {', '.join(workloads)}")
        row = lat.table(net)
        entries = {}
        for unit in row.data:
            if unit in ("source", "sources", "ranges"):
                continue
            if unit not in UNITS:
                row.fail(unit, f"is not a processor/precision unit; valid: {', '.join(UNITS)}")
            entries[unit] = row.number(unit, positive=True)
        row.source()
        row.provenance()
        row.done()
        if fallback not in entries:
            row.fail(fallback, f"is missing: every network needs the fallback unit {fallback}")
        latency[net] = entries
    missing = sorted(set(workloads) - set(latency))
    if missing:
        lat.fail(missing[0], "is missing: every catalog network needs a latency row")
    for key in ("display_name", "soc"):
        top.str(key)
    top.done()
    return DeviceProfile(
        name=name, display_name=top.data["display_name"], kind=kind, soc=top.data["soc"],
        targets=tuple(targets), fallback_unit=fallback, fallback_slowdown=fallback_slowdown,
        latency_ms=latency,
        processors=processors, base_power_w=base_power_w, wifi_active_w=wifi_active_w,
        overhead_ms=overhead_ms, edge=edge, cloud=cloud, path=str(path),
    )


# --------------------------------------------------------------------------------------------
# Links


@dataclass(frozen=True)
class LinkModel:
    """Signal-strength model of one wireless link (see ``links.toml``)."""

    name: str
    mcs_min_rssi_dbm: tuple[float, ...]
    mcs_goodput_mbps: tuple[float, ...]
    below_min_goodput_mbps: float
    disconnect_rssi_dbm: float
    timeout_ms: float
    rtt_ms: float
    rtt_per_mcs_step_below_4_ms: float
    tail_ms: float
    tail_power_fraction: float
    power_band_edges_dbm: tuple[float, ...]
    tx_power_multiplier: tuple[float, ...]
    rx_power_multiplier: tuple[float, ...]


@lru_cache(maxsize=None)
def load_links() -> dict[str, LinkModel]:
    """The ``wifi`` (cloud path) and ``p2p`` (edge path) link models."""
    file = DATA_DIR / "links.toml"
    top = _Table(read_toml(file), file)
    out = {}
    for name in ("wifi", "p2p"):
        t = top.table(name)
        t.str("standard")
        phy = t.numbers("mcs_phy_mbps", minimum=0.0)
        rssi = t.numbers("mcs_min_rssi_dbm", length=len(phy), minimum=None)
        mult = t.number("phy_multiplier", positive=True)
        shift = t.number("threshold_shift_db", minimum=None)
        frac = t.number("goodput_fraction", positive=True, maximum=1.0)
        edges = t.numbers("power_band_edges_dbm", minimum=None)
        out[name] = LinkModel(
            name=name,
            mcs_min_rssi_dbm=tuple(r + shift for r in rssi),
            mcs_goodput_mbps=tuple(p * mult * frac for p in phy),
            below_min_goodput_mbps=t.number("below_min_goodput_mbps", positive=True),
            disconnect_rssi_dbm=t.number("disconnect_rssi_dbm", minimum=None),
            timeout_ms=t.number("timeout_ms", positive=True),
            rtt_ms=t.number("rtt_ms"),
            rtt_per_mcs_step_below_4_ms=t.number("rtt_per_mcs_step_below_4_ms"),
            tail_ms=t.number("tail_ms"),
            tail_power_fraction=t.number("tail_power_fraction", maximum=1.0),
            power_band_edges_dbm=edges,
            tx_power_multiplier=t.numbers("tx_power_multiplier", length=len(edges) + 1, minimum=0.0),
            rx_power_multiplier=t.numbers("rx_power_multiplier", length=len(edges) + 1, minimum=0.0),
        )
        t.source()
        t.provenance()
        t.done()
    return out


# --------------------------------------------------------------------------------------------
# Scenarios and settings


@lru_cache(maxsize=None)
def load_scenarios() -> dict[str, Scenario]:
    """All scenarios of ``scenarios.toml``."""
    file = DATA_DIR / "scenarios.toml"
    top = _Table(read_toml(file), file)
    workloads = load_workloads()
    out = {}
    for name in top.data:
        t = top.table(name)
        nets = t.strings("networks")
        for n in nets:
            if n not in workloads:
                t.fail("networks", f"names {n!r}, not a catalog network; valid: {', '.join(workloads)}")
        out[name] = Scenario(
            name=name, description=t.str("description"), qos_ms=t.number("qos_ms", positive=True),
            accuracy_tolerance=t.number("accuracy_tolerance", maximum=1.0),
            request_gap_ms=t.number("request_gap_ms", positive=True), networks=nets,
        )
        t.source()
        t.provenance()
        t.done()
    return out


def get_scenario(name: str) -> Scenario:
    """One scenario by name; unknown names list the valid ones."""
    scenarios = load_scenarios()
    if name not in scenarios:
        raise UnknownNameError("scenario", name, scenarios)
    return scenarios[name]


@dataclass(frozen=True)
class AppProfile:
    """What a co-running app uses: mean CPU utilisation and memory, percent."""

    cpu_pct: float
    mem_pct: float


@dataclass(frozen=True)
class StaticSetting:
    """Conditions drawn once per episode and held."""

    apps: tuple[str, ...]
    rssi_wifi_dbm: tuple[float, ...]
    rssi_p2p_dbm: tuple[float, ...]
    local_latency_sigma: float
    server_latency_sigma: float
    goodput_sigma: float


@dataclass(frozen=True)
class DynamicSetting:
    """Co-running apps switching and signal drifting/dropping within an episode."""

    apps: tuple[str, ...]
    app_mean_requests: float
    app_cpu_jitter_pct: float
    app_mem_jitter_pct: float
    rssi_wifi_range_dbm: tuple[float, ...]
    rssi_p2p_range_dbm: tuple[float, ...]
    rssi_segment_mean_requests: float
    rssi_fading_sigma_db: float
    rssi_drop_probability: float
    rssi_drop_depth_db: float
    rssi_drop_mean_requests: float
    local_latency_sigma: float
    server_latency_sigma: float
    goodput_sigma: float


@lru_cache(maxsize=None)
def load_settings() -> tuple[dict[str, AppProfile], StaticSetting, DynamicSetting]:
    """App profiles and the static / dynamic variance parameters of ``settings.toml``."""
    file = DATA_DIR / "settings.toml"
    top = _Table(read_toml(file), file)
    apps_t = top.table("apps")
    apps = {}
    for name in apps_t.data:
        a = apps_t.table(name)
        apps[name] = AppProfile(a.number("cpu_pct", maximum=100.0), a.number("mem_pct", maximum=100.0))
        a.provenance()
        a.done()

    def app_list(t: _Table) -> tuple[str, ...]:
        names = t.strings("apps")
        for n in names:
            if n not in apps:
                t.fail("apps", f"names {n!r}; valid: {', '.join(apps)}")
        return names

    s = top.table("static")
    static = StaticSetting(
        apps=app_list(s), rssi_wifi_dbm=s.numbers("rssi_wifi_dbm"),
        rssi_p2p_dbm=s.numbers("rssi_p2p_dbm"),
        local_latency_sigma=s.number("local_latency_sigma"),
        server_latency_sigma=s.number("server_latency_sigma"),
        goodput_sigma=s.number("goodput_sigma"),
    )
    s.provenance()
    s.done()
    d = top.table("dynamic")
    dynamic = DynamicSetting(
        apps=app_list(d), app_mean_requests=d.number("app_mean_requests", minimum=1.0),
        app_cpu_jitter_pct=d.number("app_cpu_jitter_pct"),
        app_mem_jitter_pct=d.number("app_mem_jitter_pct"),
        rssi_wifi_range_dbm=d.numbers("rssi_wifi_range_dbm", length=2),
        rssi_p2p_range_dbm=d.numbers("rssi_p2p_range_dbm", length=2),
        rssi_segment_mean_requests=d.number("rssi_segment_mean_requests", minimum=1.0),
        rssi_fading_sigma_db=d.number("rssi_fading_sigma_db"),
        rssi_drop_probability=d.number("rssi_drop_probability", maximum=1.0),
        rssi_drop_depth_db=d.number("rssi_drop_depth_db"),
        rssi_drop_mean_requests=d.number("rssi_drop_mean_requests", minimum=1.0),
        local_latency_sigma=d.number("local_latency_sigma"),
        server_latency_sigma=d.number("server_latency_sigma"),
        goodput_sigma=d.number("goodput_sigma"),
    )
    d.provenance()
    d.done()
    top.provenance()
    top.done()
    return apps, static, dynamic


def check_setting(name: str) -> str:
    """Validate a setting name (``static`` or ``dynamic``)."""
    if name not in SETTINGS:
        raise UnknownNameError("setting", name, SETTINGS)
    return name


# --------------------------------------------------------------------------------------------
# Observation bins and reward presets


@dataclass(frozen=True)
class FeatureSpec:
    """One observation feature: which raw field it bins, and how."""

    name: str
    field: str
    edges: tuple[float, ...]
    descending: bool
    labels: tuple[str, ...]

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1


WORKLOAD_FIELDS = ("conv", "fc", "rc")


#: Bundled state definitions (``features=`` names): file in ``data/``.
FEATURE_SETS = {"paper": "features.toml", "per_network": "features_per_network.toml",
                "fitted": "features_fitted.toml"}


def resolve_features_path(name_or_path: str | None) -> Path:
    """``None`` or a bundled name (:data:`FEATURE_SETS`) -> its file; anything else is a path."""
    if not name_or_path:
        return DATA_DIR / FEATURE_SETS["paper"]
    if name_or_path in FEATURE_SETS:
        return DATA_DIR / FEATURE_SETS[name_or_path]
    if not (str(name_or_path).endswith(".toml") or "/" in str(name_or_path)):
        raise UnknownNameError("features", name_or_path,
                               [*FEATURE_SETS, "<path to a features .toml>"])
    return Path(name_or_path)


@lru_cache(maxsize=None)
def load_features(path: str | None = None) -> tuple[FeatureSpec, ...]:
    """The observation features and bins: a bundled set (``paper``, the default, or
    ``per_network``) or a path to your own ``features.toml``."""
    from autoscale_env.world.types import CONTEXT_FIELDS

    file = resolve_features_path(path)
    top = _Table(read_toml(file), file)
    raw = top._get("feature")
    if not isinstance(raw, list) or not raw:
        top.fail("feature", "must be a non-empty array of [[feature]] tables")
    out = []
    for i, item in enumerate(raw):
        t = _Table(item, file, f"feature[{i}]")
        field = t.str("field")
        if field not in WORKLOAD_FIELDS + CONTEXT_FIELDS:
            t.fail("field", f"must be one of {', '.join(WORKLOAD_FIELDS + CONTEXT_FIELDS)}, got {field!r}")
        edges = t.numbers("edges", minimum=None)
        if list(edges) != sorted(set(edges)):
            t.fail("edges", f"must be strictly increasing, got {list(edges)}")
        labels = t.strings("labels")
        if len(labels) != len(edges) + 1:
            t.fail("labels", f"must have len(edges) + 1 = {len(edges) + 1} items, got {len(labels)}")
        name = t.str("name")
        if name in [f.name for f in out]:
            t.fail("name", f"{name!r} is already the name of another feature")
        out.append(FeatureSpec(name, field, edges, t.boolean("descending", False), labels))
        t.done()
    top.done()
    return tuple(out)


@dataclass(frozen=True)
class RewardPreset:
    """Reward weights (see ``rewards.toml`` for the formula)."""

    name: str
    description: str
    violation_penalty: float
    latency_weight: float
    accuracy_weight: float


@lru_cache(maxsize=None)
def load_reward_presets() -> dict[str, RewardPreset]:
    """All reward presets of ``rewards.toml``."""
    file = DATA_DIR / "rewards.toml"
    top = _Table(read_toml(file), file)
    presets = top.table("presets")
    out = {}
    for name in presets.data:
        t = presets.table(name)
        out[name] = RewardPreset(
            name=name, description=t.str("description"),
            violation_penalty=t.number("violation_penalty", positive=True),
            latency_weight=t.number("latency_weight"), accuracy_weight=t.number("accuracy_weight"),
        )
        t.done()
    top.done()
    return out


def get_reward_preset(name: str) -> RewardPreset:
    """One reward preset by name; unknown names list the valid ones."""
    presets = load_reward_presets()
    if name not in presets:
        raise UnknownNameError("reward preset", name, presets)
    return presets[name]
