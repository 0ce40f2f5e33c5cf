"""Schemas of the TOML data files: one pydantic model per kind of table.

The room: ``autoscale_env.world``. It may import pydantic, :mod:`autoscale_env.world.types` and
:mod:`autoscale_env.world.errors`, nothing above the world.

How a data file is read (:mod:`autoscale_env.world.config`, :mod:`autoscale_env.fleet.config`,
:mod:`autoscale_env.backends.drift`):

1. :func:`autoscale_env.world.config.read_toml` reads it, bounded (regular file, size, nesting);
2. :func:`validate` checks the document against a model of this module: types, required and
   unknown fields, the physically plausible range of every number, and the checks that stay
   inside one file (a list as long as another, a name defined elsewhere in the file);
3. the loader runs the checks that need another file (a network of the catalog, a bundled
   scenario) and builds the frozen dataclasses the rest of the code uses
   (:class:`~autoscale_env.world.config.DeviceProfile`, ...). Models never leave the loaders.

Every problem becomes one :class:`~autoscale_env.world.errors.ConfigError` naming the file, the
dotted field path (``processors.cpu.busy_power_w``, ``feature[1].edges``) and the valid range or
choices, one line per problem.

Plausibility bounds: each number's range is wide enough for any real phone, server or link and
narrow enough that no finite value can overflow the reward (latencies from 1 us to 1 h, powers
from 1 mW to 100 W, interference coefficients up to 10x, fractions and accuracies in [0, 1]), so
a profile either loads or is refused; it never yields NaN or infinite rewards.

Provenance: every table may carry ``source`` (text), ``sources`` (field -> text) and ``ranges``
(field -> ``[lo, hi]``, or one pair per item of a list field); :class:`Table` checks that they name
fields of the table (docs/calibration.md, "Provenance fields"). A new field of a data file is one
more annotated attribute on its model here, plus the dataclass field the loader fills.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WrapValidator, model_validator
from pydantic_core import PydanticCustomError

from autoscale_env.world.errors import ConfigError
from autoscale_env.world.types import CONTEXT_FIELDS, PRECISIONS, PROCESSORS, Target

UNITS = tuple(f"{p}/{q}" for p in PROCESSORS for q in PRECISIONS)
DEVICE_KINDS = ("phone", "edge", "cloud")
WORKLOAD_FIELDS = ("conv", "fc", "rc")
META_KEYS = ("source", "sources", "ranges")
#: fleet.toml choices
SHARING = ("equal_throughput", "equal_airtime")
DISCIPLINES = ("fifo", "processor_sharing")
#: drift.toml choices
SHIFT_KINDS = ("rssi", "load", "cloud_queue", "thermal")
LINKS = ("wifi", "p2p")

# ---- the plausibility bounds (units in the names) -----------------------------------------------

MIN_LATENCY_MS = 1e-3  # 1 us: below any real inference or round trip
MAX_LATENCY_MS = 3_600_000.0  # 1 h: far above any request timeout
MIN_POWER_W = 1e-3  # 1 mW: a power-collapsed block; a busy one draws far more
MAX_POWER_W = 100.0  # a phone draws < 10 W, a server GPU is not metered (phone energy only)
MAX_INTERFERENCE = 10.0  # latency x (1 + k * load) with load <= 1: at most 11x slower
MAX_SLOWDOWN = 100.0
MIN_RSSI_DBM, MAX_RSSI_DBM = -150.0, 0.0  # thermal noise floor to touching the antenna
MIN_RATE_MBPS, MAX_RATE_MBPS = 1e-3, 1e5  # 1 kbit/s to 100 Gbit/s
MAX_LAYERS = 100_000
MAX_BYTES = 1 << 30  # 1 GiB per request or response
MAX_SIGMA = 2.0  # lognormal sigma: a 2-sigma draw is e^4 ~ 55x
MAX_REQUESTS = 1e9
MAX_WEIGHT = 1e6
MAX_EDGE = 1e9

# ---- error reporting ----------------------------------------------------------------------------

#: At most this many problems are listed per file (the rest are counted).
MAX_PROBLEMS = 10
_TABLE_ERRORS = ("model_type", "model_attributes_type", "dict_type", "dataclass_type")


#: A value is quoted in an error up to this many characters (a file may hold a huge list).
MAX_SHOWN_CHARS = 120


def shown(value: Any) -> str:
    """``repr(value)``, cut to :data:`MAX_SHOWN_CHARS`."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS - 3] + "..."


def problem(text: str, field: str = "") -> PydanticCustomError:
    """A validation problem with our own wording; ``field`` is appended to the error's location
    (for checks a model runs over its own fields)."""
    return PydanticCustomError("autoscale", "{text}", {"text": text, "field": field})


def _field_name(loc: tuple[Any, ...], table: bool) -> tuple[str, int | None]:
    """(dotted field path, item index or None): a trailing index of a list of values is reported
    as "item i" of the list field; an index into a list of tables is part of the path."""
    parts: list[str] = []
    item = None
    for i, part in enumerate(loc):
        if part == "[key]":  # a bad dict key: the key itself is the field
            continue
        if isinstance(part, int):
            if i == len(loc) - 1 and not table:
                item = part
            elif parts:
                parts[-1] += f"[{part}]"
            else:
                parts.append(f"[{part}]")
        else:
            parts.append(str(part))
    return ".".join(parts) or "<top level>", item


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class of the table at ``loc`` inside ``model`` (None where it has none)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (list, dict):
            tp = get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _describe(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    kind, value = error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "autoscale":
        return ctx["text"]
    if kind == "missing":
        return "is missing"
    if kind == "extra_forbidden":
        table = _model_at(model, tuple(error["loc"])[:-1])
        known = f" (known: {', '.join(sorted(table.model_fields))})" if table else ""
        return f"is not a known field here{known}"
    if kind in _TABLE_ERRORS:
        return f"must be a table, got {shown(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, got {shown(value)}"
    return f"{error['msg']}, got {shown(value)}"  # pydantic's own wording (a type this module lacks)


def describe_errors(path: object, error: ValidationError, model: type[BaseModel],
                    prefix: tuple[Any, ...] = ()) -> str:
    """One line per problem: ``FILE: field 'a.b' must be ..., got ...``."""
    lines = []
    for e in error.errors(include_url=False):
        ctx = e.get("ctx") or {}
        loc = prefix + tuple(e["loc"]) + ((ctx["field"],) if ctx.get("field") else ())
        name, item = _field_name(loc, e["type"] in _TABLE_ERRORS)
        text = _describe(e, model)
        lines.append(f"{path}: field '{name}' " + (f"item {item}: {text}" if item is not None else text))
    more = len(lines) - MAX_PROBLEMS
    lines = lines[:MAX_PROBLEMS] + ([f"{path}: ... and {more} more problems"] if more > 0 else [])
    return "\n".join(lines)


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, path: object, prefix: tuple[Any, ...] = ()) -> M:
    """``data`` (a parsed TOML document or table) checked against ``model``; a
    :class:`ConfigError` naming ``path`` and each field at fault otherwise. ``prefix`` is the
    location of ``data`` inside its file (for a table validated on its own)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_errors(path, e, model, prefix)) from None


def fail(path: object, field: str, text: str) -> ConfigError:
    """The error of a check a loader runs after validation, worded as the schema's are."""
    return ConfigError(f"{path}: field '{field}' {text}")


# ---- value types --------------------------------------------------------------------------------


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def range_text(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
               le: float | None = None, unit: str = "") -> str:
    """``"> 0 and <= 100 W"``: a valid range as an error message states it."""
    bounds = [f"{op} {_number_text(v)}" for op, v in ((">", gt), (">=", ge), ("<", lt), ("<=", le))
              if v is not None]
    text = " and ".join(bounds) or "finite"
    return f"{text} {unit}".rstrip()


def Number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None, unit: str = "") -> Any:
    """A finite float (an int is accepted, a bool or a string is not) within its plausible
    range; the error states the whole range."""
    allowed = range_text(gt=gt, ge=ge, lt=lt, le=le, unit=unit)

    def reword(value: Any, handler: Any) -> float:
        try:
            return handler(value)
        except ValidationError as e:
            kind = e.errors()[0]["type"]
        if kind == "finite_number":
            raise problem(f"must be a finite number ({allowed}), got {shown(value)}")
        if kind in ("float_type", "float_parsing"):
            raise problem(f"must be a number ({allowed}), got {shown(value)}")
        raise problem(f"must be {allowed}, got {shown(value)}")

    return Annotated[float, Field(strict=True, allow_inf_nan=False, gt=gt, ge=ge, lt=lt, le=le,
                                  description=allowed), WrapValidator(reword)]


def Integer(*, ge: int = 0, le: int | None = None, unit: str = "") -> Any:
    """A whole number (not a bool, not a float) within its plausible range."""
    allowed = range_text(ge=ge, le=le, unit=unit)

    def reword(value: Any, handler: Any) -> int:
        try:
            return handler(value)
        except ValidationError as e:
            kind = e.errors()[0]["type"]
        if kind in ("int_type", "int_parsing", "int_from_float"):
            raise problem(f"must be an integer ({allowed}), got {shown(value)}")
        raise problem(f"must be {allowed}, got {shown(value)}")

    return Annotated[int, Field(strict=True, ge=ge, le=le, description=allowed),
                     WrapValidator(reword)]


def _reword_as(text: str):
    def reword(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise problem(f"{text}, got {shown(value)}") from None
    return WrapValidator(reword)


def Choice(*choices: str) -> Any:
    """One of a closed set of strings; the error lists them."""
    return Annotated[Literal[choices], _reword_as(f"must be one of {', '.join(choices)}")]


Text = Annotated[str, Field(strict=True), _reword_as("must be a string")]
Flag = Annotated[bool, Field(strict=True), _reword_as("must be true or false")]


def _source(value: Any, handler: Any) -> str:
    try:
        text = handler(value)
    except ValidationError:
        text = ""
    if not text.strip():
        raise problem(f"must say where the numbers come from, or 'estimate: <reason>', got "
                      f"{shown(value)}")
    return text


#: Where a number comes from: a citation, or ``"estimate: <reason>"``.
Source = Annotated[str, Field(strict=True), WrapValidator(_source)]


def ListOf(item: Any, what: str, *, length: int | None = None) -> Any:
    """A non-empty list of ``item`` (of exactly ``length`` items if given); the errors of its
    items keep their own wording ("item 2 must be ...")."""

    def reword(value: Any, handler: Any) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise problem(f"must be a non-empty list of {what}, got {shown(value)}")
        if length is not None and len(value) != length:
            raise problem(f"must have {length} items, got {len(value)}")
        return handler(value)

    return Annotated[list[item], WrapValidator(reword)]


def _target_name(value: str) -> str:
    try:
        Target.parse(value)
    except ValueError as e:
        raise problem(str(e)) from None
    return value


TargetName = Annotated[Text, WrapValidator(lambda value, handler: _target_name(handler(value)))]


def _is_span(span: Any) -> bool:
    return (isinstance(span, list) and len(span) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                    for x in span) and span[0] <= span[1])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _after(check):
    """A model validator run on the validated model (``check(self)`` raises :func:`problem`)."""
    return model_validator(mode="after")(check)


# ---- the base of every table --------------------------------------------------------------------


class Table(BaseModel):
    """A TOML table: unknown fields are refused (a typo must not fall back to a default), and
    the optional provenance fields (``source``, ``sources``, ``ranges``) name fields of it."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    source: Source | None = None
    sources: dict[str, Source] = {}
    ranges: dict[str, Any] = {}

    def field_value(self, key: str) -> Any:
        """The value of a field given in the file (declared or extra), else None."""
        if key in META_KEYS:
            return None
        if key in self.model_fields_set:
            return getattr(self, key)
        return (self.model_extra or {}).get(key)

    @model_validator(mode="after")
    def _provenance(self) -> Table:
        given = set(self.model_fields_set) | set(self.model_extra or {})
        for key in self.sources:
            if key not in given or key in META_KEYS:
                raise problem("names no numeric field of this table", field=f"sources.{key}")
        for key, span in self.ranges.items():
            value = self.field_value(key)
            if isinstance(value, list):
                if (not isinstance(span, list) or len(span) != len(value)
                        or not all(_is_span(s) for s in span)):
                    raise problem(f"must be {len(value)} pairs [lo, hi] with lo <= hi (one per "
                                  f"item of {key}), got {shown(span)}", field=f"ranges.{key}")
            elif _is_number(value):
                if not _is_span(span):
                    raise problem(f"must be [lo, hi] with lo <= hi, got {shown(span)}",
                                  field=f"ranges.{key}")
            else:
                raise problem("names no numeric field of this table", field=f"ranges.{key}")
        return self


class Sourced(Table):
    """A table whose numbers must say where they come from."""

    source: Source


# ---- workloads.toml ------------------------------------------------------------------------------

Accuracy = Number(ge=0.0, le=1.0, unit="(fraction)")
Layers = Integer(ge=0, le=MAX_LAYERS, unit="layers")
Bytes = Integer(ge=1, le=MAX_BYTES, unit="bytes")


class WorkloadSchema(Sourced):
    """``[networks.NAME]``: one network of the catalog."""

    display_name: Text
    conv: Layers
    fc: Layers
    rc: Layers
    input_bytes: Bytes
    output_bytes: Bytes
    accuracy_fp32: Accuracy
    accuracy_fp16: Accuracy
    accuracy_int8: Accuracy


class WorkloadsFile(Table):
    """``workloads.toml``."""

    networks: dict[str, WorkloadSchema]


# ---- devices/*.toml ------------------------------------------------------------------------------

LatencyMs = Number(ge=MIN_LATENCY_MS, le=MAX_LATENCY_MS, unit="ms")
PowerW = Number(ge=MIN_POWER_W, le=MAX_POWER_W, unit="W")
IdlePowerW = Number(ge=0.0, le=MAX_POWER_W, unit="W")
Interference = Number(ge=0.0, le=MAX_INTERFERENCE, unit="(x co-running load)")


class LatencyRow(Sourced):
    """``[latency_ms.NETWORK]``: ``"processor/precision" = ms`` per unit the device runs."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, LatencyMs] = Field(init=False)  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _units_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields and key not in UNITS:
                    raise problem(f"is not a processor/precision unit; valid: {', '.join(UNITS)}",
                                  field=str(key))
        return data


class BasePower(Sourced):
    """``[base]`` of a phone: what it draws whatever runs."""

    power_w: PowerW
    wifi_active_w: PowerW


class ProcessorSchema(Sourced):
    """``[processors.NAME]`` of a phone."""

    busy_power_w: PowerW
    idle_power_w: IdlePowerW
    cpu_interference: Interference
    mem_interference: Interference


class DeviceKind(BaseModel):
    """The first check of a device profile: which schema the rest follows."""

    model_config = ConfigDict(extra="allow")
    kind: Choice(*DEVICE_KINDS)


class DeviceSchema(Table):
    """What every device profile has (``kind`` decides the rest: :class:`PhoneSchema`,
    :class:`ServerSchema`)."""

    kind: Choice(*DEVICE_KINDS)
    name: Text
    display_name: Text
    soc: Text
    targets: ListOf(TargetName, "strings")
    fallback_unit: Choice(*UNITS)
    fallback_slowdown: Number(ge=1.0, le=MAX_SLOWDOWN, unit="(x latency)")
    fallback_source: Source
    latency_ms: dict[str, LatencyRow]

    @_after
    def _targets_and_rows(self) -> DeviceSchema:
        if len(set(self.targets)) != len(self.targets):
            raise problem("lists a target twice", field="targets")
        if self.kind != "phone" and any(not t.startswith(f"{self.kind}/") for t in self.targets):
            raise problem(f"of a {self.kind} profile must all start with '{self.kind}/'",
                          field="targets")
        for net, row in self.latency_ms.items():
            if self.fallback_unit not in (row.model_extra or {}):
                raise problem(f"is missing: every network needs the fallback unit "
                              f"{self.fallback_unit}", field=f"latency_ms.{net}.{self.fallback_unit}")
        return self


class PhoneSchema(DeviceSchema):
    """A phone profile: it runs requests and pays the energy."""

    kind: Literal["phone"]
    edge: Text
    cloud: Text
    base: BasePower
    processors: dict[Choice(*PROCESSORS), ProcessorSchema]

    @_after
    def _processors_of_targets(self) -> PhoneSchema:
        for name in self.targets:
            t = Target.parse(name)
            if t.is_local and t.processor not in self.processors:
                raise problem(f"has no [processors.{t.processor}] for target {t}",
                              field="processors")
        return self


class ServerSchema(DeviceSchema):
    """An edge or cloud profile: service times and a fixed overhead per request."""

    kind: Literal["edge", "cloud"]
    overhead_ms: Number(ge=0.0, le=MAX_LATENCY_MS, unit="ms")
    overhead_source: Source


# ---- links.toml ----------------------------------------------------------------------------------

RssiDbm = Number(ge=MIN_RSSI_DBM, le=MAX_RSSI_DBM, unit="dBm")
DelayMs = Number(ge=0.0, le=MAX_LATENCY_MS, unit="ms")
Multiplier = Number(ge=0.0, le=MAX_SLOWDOWN, unit="(x wifi_active_w)")


class LinkSchema(Sourced):
    """``[wifi]`` / ``[p2p]``: RSSI -> MCS -> goodput, RSSI -> radio power, RSSI -> RTT."""

    standard: Text
    mcs_phy_mbps: ListOf(Number(ge=MIN_RATE_MBPS, le=MAX_RATE_MBPS, unit="Mbit/s"), "numbers")
    mcs_min_rssi_dbm: ListOf(RssiDbm, "numbers")
    phy_multiplier: Number(ge=0.01, le=64.0, unit="(spatial streams x channel width)")
    threshold_shift_db: Number(ge=-50.0, le=50.0, unit="dB")
    goodput_fraction: Number(ge=0.01, le=1.0, unit="(of the PHY rate)")
    below_min_goodput_mbps: Number(ge=MIN_RATE_MBPS, le=MAX_RATE_MBPS, unit="Mbit/s")
    disconnect_rssi_dbm: RssiDbm
    timeout_ms: LatencyMs
    rtt_ms: DelayMs
    rtt_per_mcs_step_below_4_ms: DelayMs
    tail_ms: DelayMs
    tail_power_fraction: Number(ge=0.0, le=1.0, unit="(of wifi_active_w)")
    power_band_edges_dbm: ListOf(RssiDbm, "numbers")
    tx_power_multiplier: ListOf(Multiplier, "numbers")
    rx_power_multiplier: ListOf(Multiplier, "numbers")

    @_after
    def _lengths(self) -> LinkSchema:
        if len(self.mcs_min_rssi_dbm) != len(self.mcs_phy_mbps):
            raise problem(f"must have {len(self.mcs_phy_mbps)} items (one per mcs_phy_mbps), "
                          f"got {len(self.mcs_min_rssi_dbm)}", field="mcs_min_rssi_dbm")
        bands = len(self.power_band_edges_dbm) + 1
        for key in ("tx_power_multiplier", "rx_power_multiplier"):
            if len(getattr(self, key)) != bands:
                raise problem(f"must have {bands} items (len(power_band_edges_dbm) + 1), got "
                              f"{len(getattr(self, key))}", field=key)
        return self


class LinksFile(Table):
    """``links.toml``."""

    wifi: LinkSchema
    p2p: LinkSchema


# ---- scenarios.toml -------------------------------------------------------------------------------


class ScenarioSchema(Sourced):
    """``[NAME]``: one use case."""

    description: Text
    qos_ms: LatencyMs
    accuracy_tolerance: Accuracy
    request_gap_ms: LatencyMs
    networks: ListOf(Text, "strings")


# ---- settings.toml --------------------------------------------------------------------------------

Pct = Number(ge=0.0, le=100.0, unit="%")
Sigma = Number(ge=0.0, le=MAX_SIGMA, unit="(lognormal sigma)")
MeanRequests = Number(ge=1.0, le=MAX_REQUESTS, unit="requests")


class AppSchema(Table):
    """``[apps.NAME]``: a co-running app's mean CPU and memory use."""

    cpu_pct: Pct
    mem_pct: Pct


class StaticSchema(Table):
    """``[static]``: conditions drawn once per episode."""

    apps: ListOf(Text, "strings")
    rssi_wifi_dbm: ListOf(RssiDbm, "numbers")
    rssi_p2p_dbm: ListOf(RssiDbm, "numbers")
    local_latency_sigma: Sigma
    server_latency_sigma: Sigma
    goodput_sigma: Sigma


def _check_span(model: Table, key: str) -> None:
    lo, hi = getattr(model, key)
    if lo > hi:
        raise problem(f"must be [low, high] with low <= high, got [{lo!r}, {hi!r}]", field=key)


class DynamicSchema(Table):
    """``[dynamic]``: apps switching and signal drifting within an episode."""

    apps: ListOf(Text, "strings")
    app_mean_requests: MeanRequests
    app_cpu_jitter_pct: Pct
    app_mem_jitter_pct: Pct
    rssi_wifi_range_dbm: ListOf(RssiDbm, "numbers", length=2)
    rssi_p2p_range_dbm: ListOf(RssiDbm, "numbers", length=2)
    rssi_segment_mean_requests: MeanRequests
    rssi_fading_sigma_db: Number(ge=0.0, le=50.0, unit="dB")
    rssi_drop_probability: Number(ge=0.0, le=1.0, unit="(probability)")
    rssi_drop_depth_db: Number(ge=0.0, le=MAX_RSSI_DBM - MIN_RSSI_DBM, unit="dB")
    rssi_drop_mean_requests: MeanRequests
    local_latency_sigma: Sigma
    server_latency_sigma: Sigma
    goodput_sigma: Sigma

    @_after
    def _spans(self) -> DynamicSchema:
        _check_span(self, "rssi_wifi_range_dbm")
        _check_span(self, "rssi_p2p_range_dbm")
        return self


class SettingsFile(Table):
    """``settings.toml``: the apps, and the static and dynamic settings that draw them."""

    apps: dict[str, AppSchema]
    static: StaticSchema
    dynamic: DynamicSchema

    @_after
    def _known_apps(self) -> SettingsFile:
        for where in ("static", "dynamic"):
            for name in getattr(self, where).apps:
                if name not in self.apps:
                    raise problem(f"names {name!r}; valid: {', '.join(self.apps)}",
                                  field=f"{where}.apps")
        return self


# ---- features*.toml -------------------------------------------------------------------------------


class FeatureSchema(Table):
    """``[[feature]]``: one observation feature, the raw field it bins and the bin edges."""

    name: Text
    field: Choice(*WORKLOAD_FIELDS, *CONTEXT_FIELDS)
    edges: ListOf(Number(ge=-MAX_EDGE, le=MAX_EDGE), "numbers")
    labels: ListOf(Text, "strings")
    descending: Flag = False

    @_after
    def _bins(self) -> FeatureSchema:
        if list(self.edges) != sorted(set(self.edges)):
            raise problem(f"must be strictly increasing, got {list(self.edges)}", field="edges")
        if len(self.labels) != len(self.edges) + 1:
            raise problem(f"must have len(edges) + 1 = {len(self.edges) + 1} items, got "
                          f"{len(self.labels)}", field="labels")
        return self


def _feature_tables(value: Any, handler: Any) -> list[FeatureSchema]:
    if not isinstance(value, list) or not value:
        raise problem(f"must be a non-empty array of [[feature]] tables, got {shown(value)}")
    return handler(value)


class FeaturesFile(Table):
    """A features file: the ``[[feature]]`` tables, in observation order."""

    feature: Annotated[list[FeatureSchema], WrapValidator(_feature_tables)]

    @_after
    def _unique_names(self) -> FeaturesFile:
        seen: set[str] = set()
        for i, f in enumerate(self.feature):
            if f.name in seen:
                raise problem(f"{f.name!r} is already the name of another feature",
                              field=f"feature[{i}].name")
            seen.add(f.name)
        return self


# ---- rewards.toml ---------------------------------------------------------------------------------


class RewardSchema(Table):
    """``[presets.NAME]``: the reward weights."""

    description: Text
    violation_penalty: Number(gt=0.0, le=MAX_WEIGHT)
    latency_weight: Number(ge=0.0, le=MAX_WEIGHT)
    accuracy_weight: Number(ge=0.0, le=MAX_WEIGHT)


class RewardsFile(Table):
    """``rewards.toml``."""

    presets: dict[str, RewardSchema]


# ---- fleet.toml -----------------------------------------------------------------------------------

Microseconds = Number(ge=0.0, le=1e6, unit="us")


class ChannelSchema(Sourced):
    """``[channel]``: how the phones share the access point's channel."""

    sharing: Choice(*SHARING)
    p2p_shares_ap_channel: Flag


class DcfSchema(Sourced):
    """``[dcf]``: 802.11 DCF timing of Bianchi's model."""

    cw_min: Integer(ge=1, le=1 << 16, unit="slots")
    cw_max: Integer(ge=1, le=1 << 16, unit="slots")
    slot_us: Number(gt=0.0, le=1e6, unit="us")
    sifs_us: Number(gt=0.0, le=1e6, unit="us")
    phy_header_us: Microseconds
    propagation_us: Microseconds
    payload_bytes: Integer(ge=1, le=1 << 20, unit="bytes")
    mac_header_bytes: Integer(ge=0, le=1 << 16, unit="bytes")
    ack_bytes: Integer(ge=0, le=1 << 16, unit="bytes")
    data_rate_mbps: Number(ge=MIN_RATE_MBPS, le=MAX_RATE_MBPS, unit="Mbit/s")
    basic_rate_mbps: Number(ge=MIN_RATE_MBPS, le=MAX_RATE_MBPS, unit="Mbit/s")

    @_after
    def _window(self) -> DcfSchema:
        if self.cw_max < self.cw_min:
            raise problem(f"must be >= cw_min ({self.cw_min}), got {self.cw_max}", field="cw_max")
        return self


class EdgeSchema(Sourced):
    """``[edge]``: the edge device's queueing discipline."""

    discipline: Choice(*DISCIPLINES)


class LoadSignalSchema(Sourced):
    """``[load_signal]``: bin edges of the broadcast congestion level (phones on a link)."""

    edges: ListOf(Number(ge=1.0, le=1e6, unit="phones"), "numbers")

    @_after
    def _whole(self) -> LoadSignalSchema:
        if any(x != int(x) for x in self.edges) or list(self.edges) != sorted(set(self.edges)):
            raise problem(f"must be increasing whole counts >= 1, got {list(self.edges)}",
                          field="edges")
        return self


class MixSchema(Sourced):
    """``[mixes.NAME]``: the devices, scenarios and settings a fleet cycles through."""

    devices: ListOf(Text, "strings")
    scenarios: ListOf(Text, "strings")
    settings: ListOf(Text, "strings")


class FleetFile(Table):
    """``fleet.toml``."""

    channel: ChannelSchema
    dcf: DcfSchema
    edge: EdgeSchema
    load_signal: LoadSignalSchema
    mixes: dict[str, MixSchema]


# ---- drift.toml -----------------------------------------------------------------------------------


class DriftRunSchema(Sourced):
    """``[run]``: the default shift index and the requests run after it."""

    shift_at: Integer(ge=1, le=int(MAX_REQUESTS), unit="requests")
    after: Integer(ge=1, le=int(MAX_REQUESTS), unit="requests")


class ShiftKind(BaseModel):
    """The first check of a ``[shifts.NAME]`` table: which schema the rest follows."""

    model_config = ConfigDict(extra="allow")
    kind: Choice(*SHIFT_KINDS)


class ShiftSchema(Sourced):
    """What every shift has."""

    description: Text
    scenario: Text
    kind: Choice(*SHIFT_KINDS)


class RssiShift(ShiftSchema):
    """``kind = "rssi"``: a link's RSSI becomes ``level + spread * (rssi - centre)``."""

    kind: Literal["rssi"]
    link: Choice(*LINKS)
    before_dbm: RssiDbm | None = None
    after_dbm: RssiDbm
    spread: Number(ge=0.0, le=1.0)


class LoadShift(ShiftSchema):
    """``kind = "load"``: co-running CPU and memory use grow."""

    kind: Literal["load"]
    add_cpu_pct: Pct
    add_mem_pct: Pct


class CloudQueueShift(ShiftSchema):
    """``kind = "cloud_queue"``: an M/M/1 wait at the cloud."""

    kind: Literal["cloud_queue"]
    utilization: Number(ge=0.0, le=0.99)


Celsius = Number(ge=-40.0, le=60.0, unit="C")


class ThermalShift(ShiftSchema):
    """``kind = "thermal"``: a first-order thermal model that throttles CPU and GPU."""

    kind: Literal["thermal"]
    ambient_before_c: Celsius
    ambient_after_c: Celsius
    thermal_resistance_c_per_w: Number(gt=0.0, le=1000.0, unit="C/W")
    time_constant_s: Number(gt=0.0, le=1e6, unit="s")
    trip_c: Number(ge=-40.0, le=150.0, unit="C")
    slowdown_per_c: Number(ge=0.0, le=1.0, unit="(per C)")
    min_frequency_fraction: Number(gt=0.0, le=1.0)
    processors: ListOf(Choice(*PROCESSORS), "strings")


SHIFT_SCHEMAS: dict[str, type[ShiftSchema]] = {
    "rssi": RssiShift, "load": LoadShift, "cloud_queue": CloudQueueShift, "thermal": ThermalShift}


class DriftFile(Table):
    """``drift.toml`` (each ``[shifts.NAME]`` is then checked by its kind's schema)."""

    run: DriftRunSchema
    shifts: dict[str, dict[str, Any]]
