"""Load and validate the data files that define the world (devices, workloads, links, scenarios,
settings, observation bins, reward presets).

Everything is TOML inside ``autoscale_env/data``; a user adds a phone by writing one more device file
(pass its path as ``device=``). Files are parsed and checked once (cached): :func:`read_toml` reads a
file within bounds, a model of :mod:`autoscale_env.world.schemas` validates it (every problem raises
:class:`~autoscale_env.world.errors.ConfigError` naming the file, the field and the valid range),
the loader checks what needs another file (catalog networks, server profiles) and builds the frozen
dataclasses below, which are what the rest of the code uses.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from autoscale_env.world import schemas
from autoscale_env.world.errors import ConfigError, UnknownNameError
from autoscale_env.world.schemas import UNITS as UNITS  # re-exported: the loaders' vocabulary
from autoscale_env.world.schemas import WORKLOAD_FIELDS as WORKLOAD_FIELDS
from autoscale_env.world.schemas import fail, validate
from autoscale_env.world.types import PRECISIONS, Scenario, Target, Workload

DATA_DIR = Path(str(resources.files("autoscale_env") / "data"))
DEVICES_DIR = DATA_DIR / "devices"
SETTINGS = ("static", "dynamic")


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


# --------------------------------------------------------------------------------------------
# Workloads


@lru_cache(maxsize=None)
def load_workloads(path: str | None = None) -> dict[str, Workload]:
    """The network catalog (``workloads.toml``), keyed by short name."""
    file = Path(path) if path else DATA_DIR / "workloads.toml"
    doc = validate(schemas.WorkloadsFile, read_toml(file), file)
    out: dict[str, Workload] = {}
    for name, t in doc.networks.items():
        out[name] = Workload(
            name=name, display_name=t.display_name, conv=t.conv, fc=t.fc, rc=t.rc,
            input_bytes=t.input_bytes, output_bytes=t.output_bytes,
            accuracy={p: getattr(t, f"accuracy_{p}") for p in PRECISIONS}, source=t.source,
        )
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


KINDS = schemas.DEVICE_KINDS


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
    data = read_toml(path)
    kind = validate(schemas.DeviceKind, data, path).kind
    doc = validate(schemas.PhoneSchema if kind == "phone" else schemas.ServerSchema, data, path)
    processors: dict[str, ProcessorPower] = {}
    base_power_w = wifi_active_w = overhead_ms = 0.0
    edge = cloud = ""
    if isinstance(doc, schemas.PhoneSchema):
        base_power_w, wifi_active_w = doc.base.power_w, doc.base.wifi_active_w
        edge = _server_profile(path, "edge", doc.edge)
        cloud = _server_profile(path, "cloud", doc.cloud)
        processors = {name: ProcessorPower(busy_power_w=p.busy_power_w, idle_power_w=p.idle_power_w,
                                           cpu_interference=p.cpu_interference,
                                           mem_interference=p.mem_interference)
                      for name, p in doc.processors.items()}
    else:
        overhead_ms = doc.overhead_ms
    workloads = load_workloads()
    for net in doc.latency_ms:
        if net not in workloads:
            raise fail(path, f"latency_ms.{net}",
                       f"is not a catalog network; valid: {', '.join(workloads)}")
    missing = sorted(set(workloads) - set(doc.latency_ms))
    if missing:
        raise fail(path, f"latency_ms.{missing[0]}",
                   "is missing: every catalog network needs a latency row")
    return DeviceProfile(
        name=doc.name, display_name=doc.display_name, kind=doc.kind, soc=doc.soc,
        targets=tuple(Target.parse(t) for t in doc.targets), fallback_unit=doc.fallback_unit,
        fallback_slowdown=doc.fallback_slowdown,
        latency_ms={net: dict(row.model_extra or {}) for net, row in doc.latency_ms.items()},
        processors=processors, base_power_w=base_power_w, wifi_active_w=wifi_active_w,
        overhead_ms=overhead_ms, edge=edge, cloud=cloud, path=str(path),
    )


def _server_profile(path: Path, kind: str, value: str) -> str:
    """A phone's ``edge`` / ``cloud``: a bundled profile name, or a file beside the phone's
    (``autoscale calibrate`` writes those) as a path."""
    if value.endswith(".toml"):
        server = path.parent / value
        if _kind_of(server) != kind:
            raise fail(path, kind, f"names {value!r}, but {server} is not a readable {kind} "
                                   f"profile (kind = \"{kind}\")")
        return str(server)
    if value not in device_names(kind):
        raise fail(path, kind, f"names {value!r}, not a bundled {kind} profile; valid: "
                               f"{', '.join(device_names(kind))} or a .toml file beside this "
                               f"profile")
    return value


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
    doc = validate(schemas.LinksFile, read_toml(file), file)
    out = {}
    for name in ("wifi", "p2p"):
        t = getattr(doc, name)
        out[name] = LinkModel(
            name=name,
            mcs_min_rssi_dbm=tuple(r + t.threshold_shift_db for r in t.mcs_min_rssi_dbm),
            mcs_goodput_mbps=tuple(p * t.phy_multiplier * t.goodput_fraction
                                   for p in t.mcs_phy_mbps),
            below_min_goodput_mbps=t.below_min_goodput_mbps,
            disconnect_rssi_dbm=t.disconnect_rssi_dbm, timeout_ms=t.timeout_ms, rtt_ms=t.rtt_ms,
            rtt_per_mcs_step_below_4_ms=t.rtt_per_mcs_step_below_4_ms, tail_ms=t.tail_ms,
            tail_power_fraction=t.tail_power_fraction,
            power_band_edges_dbm=tuple(t.power_band_edges_dbm),
            tx_power_multiplier=tuple(t.tx_power_multiplier),
            rx_power_multiplier=tuple(t.rx_power_multiplier),
        )
    return out


# --------------------------------------------------------------------------------------------
# Scenarios and settings


@lru_cache(maxsize=None)
def load_scenarios() -> dict[str, Scenario]:
    """All scenarios of ``scenarios.toml``."""
    file = DATA_DIR / "scenarios.toml"
    data = read_toml(file)
    workloads = load_workloads()
    out = {}
    for name, table in data.items():
        t = validate(schemas.ScenarioSchema, table, file, prefix=(name,))
        for n in t.networks:
            if n not in workloads:
                raise fail(file, f"{name}.networks",
                           f"names {n!r}, not a catalog network; valid: {', '.join(workloads)}")
        out[name] = Scenario(
            name=name, description=t.description, qos_ms=t.qos_ms,
            accuracy_tolerance=t.accuracy_tolerance, request_gap_ms=t.request_gap_ms,
            networks=tuple(t.networks),
        )
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
    doc = validate(schemas.SettingsFile, read_toml(file), file)
    apps = {name: AppProfile(a.cpu_pct, a.mem_pct) for name, a in doc.apps.items()}
    s, d = doc.static, doc.dynamic
    static = StaticSetting(
        apps=tuple(s.apps), rssi_wifi_dbm=tuple(s.rssi_wifi_dbm), rssi_p2p_dbm=tuple(s.rssi_p2p_dbm),
        local_latency_sigma=s.local_latency_sigma, server_latency_sigma=s.server_latency_sigma,
        goodput_sigma=s.goodput_sigma,
    )
    dynamic = DynamicSetting(
        apps=tuple(d.apps), app_mean_requests=d.app_mean_requests,
        app_cpu_jitter_pct=d.app_cpu_jitter_pct, app_mem_jitter_pct=d.app_mem_jitter_pct,
        rssi_wifi_range_dbm=tuple(d.rssi_wifi_range_dbm),
        rssi_p2p_range_dbm=tuple(d.rssi_p2p_range_dbm),
        rssi_segment_mean_requests=d.rssi_segment_mean_requests,
        rssi_fading_sigma_db=d.rssi_fading_sigma_db, rssi_drop_probability=d.rssi_drop_probability,
        rssi_drop_depth_db=d.rssi_drop_depth_db, rssi_drop_mean_requests=d.rssi_drop_mean_requests,
        local_latency_sigma=d.local_latency_sigma, server_latency_sigma=d.server_latency_sigma,
        goodput_sigma=d.goodput_sigma,
    )
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
    file = resolve_features_path(path)
    doc = validate(schemas.FeaturesFile, read_toml(file), file)
    out = [FeatureSpec(f.name, f.field, tuple(f.edges), f.descending, tuple(f.labels))
           for f in doc.feature]
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
    doc = validate(schemas.RewardsFile, read_toml(file), file)
    out = {}
    for name, t in doc.presets.items():
        out[name] = RewardPreset(
            name=name, description=t.description, violation_penalty=t.violation_penalty,
            latency_weight=t.latency_weight, accuracy_weight=t.accuracy_weight,
        )
    return out


def get_reward_preset(name: str) -> RewardPreset:
    """One reward preset by name; unknown names list the valid ones."""
    presets = load_reward_presets()
    if name not in presets:
        raise UnknownNameError("reward preset", name, presets)
    return presets[name]
