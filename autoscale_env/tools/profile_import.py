"""Build a phone profile from Android's own measurements: ``autoscale profile import``.

    autoscale profile import --power-profile power_profile.xml \\
        --benchmark mnv1:cpu/fp32=logs/mnv1_cpu_fp32_t4.txt --benchmark ... \\
        [--benchmark-dir logs/] --out runs/myphone/myphone.toml [--base mi8pro] \\
        [--soc "Snapdragon 845" --validate-as "Snapdragon 845"]

Two inputs a phone already publishes:

* **TFLite ``benchmark_model`` outputs**, one file per network x delegate x precision x threads
  (the stdout of ``adb shell benchmark_model ...``, or the benchmark app's logcat lines). The
  summary line gives the latency: ``Inference timings in us: Init: ..., First inference: ...,
  Warmup (avg): ..., Inference (avg): ...`` (TFLite 2.x; older builds print ``Average inference
  timings in us: Warmup: ..., Init: ..., Inference: ...`` or ``..., no stats: ...``). The profile
  takes ``Inference (avg)``, the steady-state mean. The parameter lines the tool logs (``Graph``,
  ``Num threads`` / ``#threads used for CPU inference``, ``Use gpu`` / ``Use NNAPI`` / ``Use
  Hexagon`` / ``Use xnnpack``, ``Allow lower precision in gpu``, ``--flag=value`` on a command
  line in the file) are checked against the unit the file is declared for: a GPU-delegate log
  cannot be ``cpu/fp32``, a log whose delegate declined the graph ("will not be executed by the
  delegate") ran on the CPU, an explicit ``gpu_precision_loss_allowed=false`` is ``gpu/fp32``.
  Where a log does not say something (threads, GPU precision), the report says so.
* **The phone's ``power_profile.xml``** (``frameworks/base/core/res/res/xml/power_profile.xml``
  of its device tree, or pulled from the phone; see ``docs/own-device.md``): currents in mA.
  ``processors.cpu.busy_power_w`` = the top step of ``cpu.core_power.clusterN`` of the fastest
  cluster x the cores the benchmarks used (``min(threads, cpu.clusters.cores)``), plus
  ``cpu.cluster_power.clusterN`` and ``cpu.active`` where the file has them: the all-cores-at-top-
  clock figure, a ceiling (sustained load under DVFS and thermal limits draws less).
  ``processors.cpu.idle_power_w`` = ``cpu.awake``. ``base.wifi_active_w`` = ``wifi.active``, or the
  mean of ``wifi.controller.rx`` / ``.tx`` at ``wifi.controller.voltage`` where only those are
  given. A ``gpu.*`` item (some vendor overlays have one) gives the GPU's busy power. Currents
  become watts at ``battery_voltage_v`` (the file has no battery voltage; 3.85 V, the nominal
  Li-ion cell, is the default and is marked an estimate).

**What the inputs do not give is reported, not invented.** A unit without a log is not a target of
the profile. A (network, unit) without a log, the phone's base power, the interference factors
(``benchmark_model`` runs nothing beside the model) and the power of a processor the XML does not
name come from the ``base`` profile, and their ``source`` says ``not measured: base <name> value``;
the report (:class:`ImportReport`, also written as ``<stem>.import.json``) lists every one. Every
number taken from an input names its file in its ``source``; the profile's header comment lists
every input with its SHA-256.

**Validation compares like with like** (:func:`covered_validation`): a bundled latency or power
row is compared with the profile only where the row's phone has the profile's SoC and the inputs
gave its number under the row's conditions (delegate, CPU threads, power items); the rest are
reported as not covered, with the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autoscale_env.tools import validate
from autoscale_env.world import config
from autoscale_env.world.errors import AutoScaleError
from autoscale_env.world.files import atomic_write
from autoscale_env.world.types import PROCESSORS

__all__ = [
    "BenchmarkRun",
    "Coverage",
    "ProfileImportError",
    "ImportReport",
    "PowerProfile",
    "benchmarks_in",
    "covered_validation",
    "import_profile",
    "parse_benchmark_log",
    "parse_power_profile",
    "soc_key",
]

#: Nominal Li-ion cell voltage (V): power_profile.xml gives currents, the world needs watts.
DEFAULT_BATTERY_VOLTAGE_V = 3.85
#: Largest input file read (bytes): a benchmark log with op profiling is ~100 kB, a power
#: profile ~10 kB.
MAX_INPUT_BYTES = 8 * 1024 * 1024
#: Log file names a ``--benchmark-dir`` picks up: ``<network>_<processor>_<precision>[_t<N>]``.
LOG_NAME = re.compile(r"^(?P<net>[A-Za-z0-9]+)_(?P<proc>cpu|gpu|dsp)_(?P<prec>fp32|fp16|int8)"
                      r"(?:_t(?P<threads>\d+))?\.(?:txt|log)$")

_NUM = r"([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)"
_SUMMARY = re.compile(r"Inference timings in us: Init: " + _NUM + r",+\s*First inference: " + _NUM
                      + r",+\s*Warmup \(avg\): " + _NUM + r",+\s*Inference \(avg\): " + _NUM)
_LEGACY = re.compile(r"Average inference timings in us: (.*)$")
_PARAM = re.compile(r"(?:^|\s|:\s)([A-Za-z#][A-Za-z0-9 #()/_-]*?)\s*:\s*\[([^\]]*)\]")
_FLAG = re.compile(r"--([a-z_]+)=(\"[^\"]*\"|'[^']*'|[^\s'\"]+)")


class ProfileImportError(AutoScaleError, ValueError):
    """An input cannot be imported; the message names the file, line and what is wrong."""


# --------------------------------------------------------------------------------------------
# benchmark_model logs


@dataclass(frozen=True)
class BenchmarkRun:
    """What one ``benchmark_model`` output says (None: the log does not say)."""

    path: str
    sha256: str
    inference_us: float
    """Steady-state mean (``Inference (avg)``), the profile's latency."""
    init_us: float | None
    first_us: float | None
    warmup_us: float | None
    summary_line: int
    """1-based line of the summary in the file."""
    format: str
    """``current`` (TFLite 2.x summary) or ``legacy`` (``Average inference timings``)."""
    graph: str | None
    threads: int | None
    delegates: tuple[str, ...]
    """Delegates the log says were requested: ``gpu``, ``nnapi``, ``hexagon``, ``xnnpack``."""
    declined: tuple[str, ...]
    """Delegates the log says did not run the graph (it fell back to the CPU)."""
    gpu_precision_loss: bool | None
    """``gpu_precision_loss_allowed`` as logged (True: FP16 allowed), None if not logged."""
    nnapi_accelerator: str | None

    @property
    def inference_ms(self) -> float:
        """The latency the profile uses, ms."""
        return self.inference_us / 1000.0


def _read_text(path: str | os.PathLike, what: str) -> tuple[str, str]:
    """(text, sha256) of a bounded input file; errors name the file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise ProfileImportError(f"{p}: {size} bytes exceeds the limit of {MAX_INPUT_BYTES} for a "
                               f"{what}")
        raw = p.read_bytes()[:MAX_INPUT_BYTES]
    except OSError as e:
        raise ProfileImportError(f"{p}: cannot read the {what}: {e.strerror or e}") from None
    return raw.decode("utf-8", errors="replace"), hashlib.sha256(raw).hexdigest()


def _truthy(value: str) -> bool | None:
    v = value.strip().strip("'\"").lower()
    if v in ("1", "true", "yes"):
        return True
    if v in ("0", "false", "no"):
        return False
    return None


def parse_benchmark_log(path: str | os.PathLike) -> BenchmarkRun:
    """Read one ``benchmark_model`` output (stdout, or logcat lines with any prefix).

    Raises:
        ProfileImportError: no summary line, or several (one file per run), naming the file.
    """
    text, sha = _read_text(path, "benchmark_model log")
    summaries: list[tuple[int, str, tuple[float | None, ...]]] = []
    params: dict[str, str] = {}
    flags: dict[str, str] = {}
    declined: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        m = _SUMMARY.search(line)
        if m:
            init, first, warm, inf = (float(x) for x in m.groups())
            summaries.append((n, "current", (init, first, warm, inf)))
        elif (m := _LEGACY.search(line)):
            parts = dict(p.split(":", 1) for p in m.group(1).split(",") if ":" in p)
            parts = {k.strip().lower(): v.strip() for k, v in parts.items()}
            inf = parts.get("inference") or parts.get("no stats")
            try:
                values = tuple(None if parts.get(k) is None else float(parts[k])
                               for k in ("init", "warmup")) + (float(inf) if inf else None,)
            except ValueError:
                values = (None, None, None)
            if values[2] is None:
                raise ProfileImportError(f"{path}: line {n}: an 'Average inference timings' line "
                                   f"without an Inference / no stats figure: {line.strip()!r}")
            summaries.append((n, "legacy", (values[0], None, values[1], values[2])))
        for key, value in _PARAM.findall(line):
            params[key.strip().lower()] = value.strip()
        for key, value in _FLAG.findall(line):
            flags[key] = value.strip("'\"")
        low = line.lower()
        if "will not be executed by the delegate" in low or "will not be executed by " in low:
            for name in ("gpu", "nnapi", "hexagon", "xnnpack"):
                if name in low:
                    declined.append(name)
    if not summaries:
        raise ProfileImportError(f"{path}: no 'Inference timings in us' (or 'Average inference "
                           f"timings in us') line: not a benchmark_model output, or a run that "
                           f"did not finish")
    if len(summaries) > 1:
        lines = ", ".join(str(s[0]) for s in summaries)
        raise ProfileImportError(f"{path}: {len(summaries)} benchmark summaries (lines {lines}); give "
                           f"one file per run (network x delegate x precision x threads)")
    line_no, fmt, (init, first, warm, inf) = summaries[0]
    if not (inf is not None and math.isfinite(inf) and inf > 0):
        raise ProfileImportError(f"{path}: line {line_no}: inference time {inf!r} us is not a "
                           f"positive number")

    def param(*names: str) -> str | None:
        for name in names:
            if name in params:
                return params[name]
        return None

    def flag(name: str) -> str | None:
        return flags.get(name)

    threads_text = (param("#threads used for cpu inference", "num threads")
                    or flag("num_threads"))
    try:
        threads = int(threads_text) if threads_text is not None else None
    except ValueError:
        threads = None
    if threads is not None and threads < 1:  # -1: the platform default, unknown here
        threads = None
    delegates = []
    for name, keys in (("gpu", ("use gpu",)), ("nnapi", ("use nnapi",)),
                       ("hexagon", ("use hexagon",)), ("xnnpack", ("use xnnpack",))):
        value = param(*keys)
        on = _truthy(value) if value is not None else None
        if on is None and flag(f"use_{name}") is not None:
            on = _truthy(flag(f"use_{name}"))
        if on:
            delegates.append(name)
    loss = param("allow lower precision in gpu", "allow fp16")
    loss_flag = flag("gpu_precision_loss_allowed")
    gpu_loss = _truthy(loss) if loss is not None else (
        _truthy(loss_flag) if loss_flag is not None else None)
    return BenchmarkRun(
        path=str(path), sha256=sha, inference_us=inf, init_us=init, first_us=first,
        warmup_us=warm, summary_line=line_no, format=fmt,
        graph=param("graph") or flag("graph"), threads=threads, delegates=tuple(delegates),
        declined=tuple(sorted(set(declined))), gpu_precision_loss=gpu_loss,
        nnapi_accelerator=param("nnapi accelerator name", "nnapi accelerator") or flag(
            "nnapi_accelerator_name"))


def check_unit(run: BenchmarkRun, unit: str) -> list[str]:
    """Refuse a log declared for a unit it cannot be; return notes on what it leaves open.

    Raises:
        ProfileImportError: the log's delegate (or its fallback to the CPU) contradicts ``unit``.
    """
    proc, prec = unit.split("/")
    ran = [d for d in run.delegates if d not in run.declined and d != "xnnpack"]
    where = f"{run.path} (declared {unit})"
    notes = []
    if run.declined and proc != "cpu" and not ran:
        raise ProfileImportError(f"{where}: the log says the {', '.join(run.declined)} delegate did not "
                           f"run the graph ('will not be executed by the delegate'), so it ran "
                           f"on the CPU; declare it cpu/<precision> or re-run")
    if "gpu" in ran and proc != "gpu":
        raise ProfileImportError(f"{where}: the log says 'Use gpu: [1]' (the GPU delegate); declare it "
                           f"gpu/fp16 or gpu/fp32")
    if "hexagon" in ran and proc != "dsp":
        raise ProfileImportError(f"{where}: the log says 'Use Hexagon: [1]' (the Hexagon DSP "
                           f"delegate); declare it dsp/int8")
    if "nnapi" in ran and proc == "cpu":
        raise ProfileImportError(f"{where}: the log says 'Use NNAPI: [1]'; NNAPI runs on an "
                           f"accelerator (declare dsp/... or gpu/...) unless it fell back, "
                           f"which the log does not say")
    if proc != "cpu" and not ran:
        raise ProfileImportError(f"{where}: the log names no {proc.upper()} delegate (no 'Use gpu: "
                           f"[1]', 'Use NNAPI: [1]' or 'Use Hexagon: [1]' line or --use_... "
                           f"flag): a plain run is cpu/<precision>")
    if proc == "gpu":
        if run.gpu_precision_loss is False and prec == "fp16":
            raise ProfileImportError(f"{where}: the log says GPU precision loss is not allowed "
                               f"(FP32 on the GPU); declare it gpu/fp32")
        if run.gpu_precision_loss is True and prec == "fp32":
            raise ProfileImportError(f"{where}: the log says GPU precision loss is allowed (FP16 on "
                               f"the GPU); declare it gpu/fp16")
        if run.gpu_precision_loss is None:
            notes.append(f"{run.path}: GPU precision not logged; the GPU delegate's default "
                         f"allows FP16 (gpu_precision_loss_allowed=true), declared {unit}")
    if run.nnapi_accelerator:
        acc = run.nnapi_accelerator.lower()
        if "gpu" in acc and proc != "gpu" or any(k in acc for k in ("dsp", "hta", "htp")) and \
                proc != "dsp":
            raise ProfileImportError(f"{where}: the log's NNAPI accelerator is "
                               f"{run.nnapi_accelerator!r}, not the {proc}")
    if run.threads is None and proc == "cpu":
        notes.append(f"{run.path}: the log does not state its thread count")
    graph = (run.graph or "").lower()
    if graph and prec != "int8" and ("quant" in graph or "int8" in graph):
        notes.append(f"{run.path}: graph {run.graph!r} looks quantized, declared {unit}")
    if graph and prec == "int8" and not ("quant" in graph or "int8" in graph):
        notes.append(f"{run.path}: graph {run.graph!r} does not look quantized, declared {unit}")
    return notes


# --------------------------------------------------------------------------------------------
# power_profile.xml


@dataclass(frozen=True)
class PowerProfile:
    """The items and arrays of an Android ``power_profile.xml`` (currents in mA)."""

    path: str
    sha256: str
    items: dict[str, float]
    arrays: dict[str, tuple[float, ...]]

    def item(self, name: str) -> float | None:
        """An item's value, None when absent or 0 (the AOSP template's 'not measured')."""
        v = self.items.get(name)
        return v if v else None


def parse_power_profile(path: str | os.PathLike) -> PowerProfile:
    """Parse ``power_profile.xml`` (``<item name=...>`` and ``<array name=...><value>``).

    DTDs and entities are refused before parsing (an untrusted XML file must not expand).
    """
    text, sha = _read_text(path, "power_profile.xml")
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ProfileImportError(f"{path}: has a DOCTYPE/ENTITY declaration; a power_profile.xml has "
                           f"none, and this reader does not expand them")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ProfileImportError(f"{path}: not valid XML: {e}") from None
    if root.tag != "device":
        raise ProfileImportError(f"{path}: the root element is <{root.tag}>, not <device> (not an "
                           f"Android power_profile.xml)")
    items: dict[str, float] = {}
    arrays: dict[str, tuple[float, ...]] = {}
    for el in root:
        name = el.get("name")
        if not name:
            continue
        try:
            if el.tag == "item":
                items[name] = float((el.text or "").strip())
            elif el.tag == "array":
                arrays[name] = tuple(float((v.text or "").strip()) for v in el.iter("value"))
        except ValueError:
            raise ProfileImportError(f"{path}: <{el.tag} name={name!r}> holds a value that is not a "
                               f"number") from None
    return PowerProfile(path=str(path), sha256=sha, items=items, arrays=arrays)


# --------------------------------------------------------------------------------------------
# The import


@dataclass
class ImportReport:
    """What the import took from each input, and what it did not find (borrowed from ``base``)."""

    name: str
    base: str
    out: str
    battery_voltage_v: float
    inputs: list[dict[str, Any]] = field(default_factory=list)
    """Every input file: path, sha256, kind, what it gave."""
    latency_ms: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """network -> unit -> {ms, file, threads, alternatives} for measured rows."""
    power: dict[str, dict[str, Any]] = field(default_factory=dict)
    """field path -> {w, from}."""
    missing: list[str] = field(default_factory=list)
    """What the inputs did not give (each borrowed from ``base`` or left out), one line each."""
    notes: list[str] = field(default_factory=list)
    """What the logs leave open (threads, GPU precision, ...)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return json.loads(json.dumps(asdict(self), allow_nan=False))


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a TOML basic string is a JSON string


def _num(x: float) -> str:
    return repr(float(f"{x:.6g}"))  # six significant digits: what the inputs carry


def _power(pp: PowerProfile, threads: int | None, volts: float,
           report: ImportReport) -> dict[str, tuple[float, str]]:
    """``{field path: (W, source text)}`` of what the power profile gives; which items each
    figure used (and, for the CPU's busy power, how many cores) goes to ``report.power``."""
    out: dict[str, tuple[float, str]] = {}
    f = Path(pp.path).name
    est_v = f"at {volts:g} V (estimate: the file gives mA and no battery voltage)"
    cores = pp.arrays.get("cpu.clusters.cores", ())
    clusters = []
    for k, n in enumerate(cores):
        power = pp.arrays.get(f"cpu.core_power.cluster{k}")
        speeds = pp.arrays.get(f"cpu.core_speeds.cluster{k}")
        if power and speeds:
            clusters.append((max(speeds), k, int(n), power[-1]))
    if clusters:
        top_khz, k, n, ma = max(clusters)
        used = min(n, threads) if threads else n
        extra = [(name, pp.item(name)) for name in (f"cpu.cluster_power.cluster{k}",
                                                    "cpu.active")]
        extra = [(name, v) for name, v in extra if v]
        total_ma = used * ma + sum(v for _, v in extra)
        parts = " + ".join([f"{used} x {ma:g} mA (cpu.core_power.cluster{k} top step, "
                            f"{top_khz / 1000:g} MHz; {used} of cpu.clusters.cores {n})"]
                           + [f"{v:g} mA ({name})" for name, v in extra])
        out["processors.cpu.busy_power_w"] = (
            total_ma * volts / 1000.0,
            f"{f}: {parts} = {total_ma:g} mA {est_v}: all used cores at the top clock, a "
            f"ceiling (sustained load under DVFS/thermal limits draws less)")
        report.power["processors.cpu.busy_power_w"] = {
            "items": [f"cpu.core_power.cluster{k}", "cpu.clusters.cores"] + [n for n, _ in extra],
            "cores": used}
    else:
        report.missing.append(f"processors.cpu.busy_power_w: {f} has no cpu.clusters.cores with "
                              f"cpu.core_power/core_speeds arrays")
    awake = pp.item("cpu.awake")
    if awake:
        out["processors.cpu.idle_power_w"] = (awake * volts / 1000.0,
                                              f"{f}: cpu.awake {awake:g} mA {est_v}")
        report.power["processors.cpu.idle_power_w"] = {"items": ["cpu.awake"]}
    else:
        report.missing.append(f"processors.cpu.idle_power_w: {f} has no cpu.awake")
    wifi = pp.item("wifi.active")
    rx, tx = pp.item("wifi.controller.rx"), pp.item("wifi.controller.tx")
    mv = pp.item("wifi.controller.voltage")
    if wifi:
        out["base.wifi_active_w"] = (wifi * volts / 1000.0, f"{f}: wifi.active {wifi:g} mA {est_v}")
        report.power["base.wifi_active_w"] = {"items": ["wifi.active"]}
    elif rx and tx:
        v = mv / 1000.0 if mv else volts
        how = f"at wifi.controller.voltage {mv:g} mV" if mv else est_v
        out["base.wifi_active_w"] = ((rx + tx) / 2 * v / 1000.0,
                                     f"{f}: mean of wifi.controller.rx {rx:g} mA and .tx {tx:g} "
                                     f"mA {how}")
        report.power["base.wifi_active_w"] = {
            "items": ["wifi.controller.rx", "wifi.controller.tx"]
            + (["wifi.controller.voltage"] if mv else [])}
    else:
        report.missing.append(f"base.wifi_active_w: {f} has neither wifi.active nor "
                              f"wifi.controller.rx/tx")
    gpu = next(((name, pp.item(name)) for name in ("gpu.active", "gpu.power", "gpu.busy")
                if pp.item(name)), None)
    if gpu:
        out["processors.gpu.busy_power_w"] = (gpu[1] * volts / 1000.0,
                                              f"{f}: {gpu[0]} {gpu[1]:g} mA {est_v}")
        report.power["processors.gpu.busy_power_w"] = {"items": [gpu[0]]}
    return out


def import_profile(power_profile: str | os.PathLike,
                   benchmarks: Sequence[tuple[str, str, str | os.PathLike]], out: str | os.PathLike,
                   *, name: str | None = None, base: str = "mi8pro", soc: str | None = None,
                   battery_voltage_v: float = DEFAULT_BATTERY_VOLTAGE_V,
                   force: bool = False) -> ImportReport:
    """Write a phone profile (``out``) and ``<stem>.import.json`` from the inputs.

    Args:
        power_profile: the phone's ``power_profile.xml``.
        benchmarks: ``(network, unit, file)`` per ``benchmark_model`` output; several files for
            one (network, unit) (thread counts) are all recorded and the fastest is used.
        out: profile to write (``.toml``); refused if it exists unless ``force``.
        name: profile name (default: ``out``'s stem).
        base: bundled phone profile that fills what the inputs do not give (module docstring).
        soc: the phone's SoC, for the profile's ``soc`` field.
        battery_voltage_v: converts the power profile's mA to W.

    Returns:
        The report (also written beside the profile).

    Raises:
        ProfileImportError: an input cannot be read or contradicts its declared unit, or no benchmark
            was given; the message names the file.
    """
    out = Path(out)
    if out.suffix != ".toml":
        raise ProfileImportError(f"--out {out}: a profile is a .toml file")
    if not benchmarks:
        raise ProfileImportError("no benchmark_model output given (--benchmark NET:UNIT=FILE or "
                           "--benchmark-dir)")
    if not (battery_voltage_v > 0 and math.isfinite(battery_voltage_v)):
        raise ProfileImportError(f"battery voltage must be a positive number of volts, got "
                           f"{battery_voltage_v!r}")
    name = name or out.stem
    report_path = out.with_name(out.stem + ".import.json")
    existing = [str(p) for p in (out, report_path) if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --force to replace")
    base_p = config.load_device(base)
    if base_p.kind != "phone":
        raise ProfileImportError(f"--base {base!r} is a {base_p.kind} profile, not a phone")
    for field_name, value in (("edge", base_p.edge), ("cloud", base_p.cloud)):
        if value.endswith(".toml"):
            raise ProfileImportError(f"--base {base!r}: its {field_name} is a file ({value}); use a "
                               f"bundled phone profile as the base")
    catalog = config.load_workloads()
    report = ImportReport(name=name, base=base_p.name, out=str(out),
                          battery_voltage_v=float(battery_voltage_v))

    runs: dict[tuple[str, str], list[BenchmarkRun]] = {}
    for net, unit, path in benchmarks:
        if net not in catalog:
            raise ProfileImportError(f"{path}: network {net!r} is not in the catalog; valid: "
                               f"{', '.join(catalog)}")
        if unit not in config.UNITS:
            raise ProfileImportError(f"{path}: unit {unit!r} is not a processor/precision; valid: "
                               f"{', '.join(config.UNITS)}")
        run = parse_benchmark_log(path)
        report.notes += check_unit(run, unit)
        runs.setdefault((net, unit), []).append(run)
        report.inputs.append({"file": str(path), "sha256": run.sha256,
                              "kind": "benchmark_model output", "network": net, "unit": unit,
                              "inference_ms": run.inference_ms, "threads": run.threads,
                              "delegates": list(run.delegates), "format": run.format,
                              "summary_line": run.summary_line})
    pp = parse_power_profile(power_profile)
    report.inputs.insert(0, {"file": str(power_profile), "sha256": pp.sha256,
                             "kind": "power_profile.xml", "items": len(pp.items),
                             "arrays": len(pp.arrays)})

    # Latency rows: the fastest run per (network, unit).
    measured: dict[str, dict[str, tuple[float, str]]] = {}
    cpu_threads = []
    for (net, unit), rs in sorted(runs.items()):
        best = min(rs, key=lambda r: r.inference_us)
        if unit.startswith("cpu/") and best.threads:
            cpu_threads.append(best.threads)
        t = f"{best.threads} threads" if best.threads else "threads not logged"
        others = "" if len(rs) == 1 else "; fastest of " + ", ".join(
            f"{Path(r.path).name} {r.inference_ms:.4g} ms" for r in rs)
        measured.setdefault(net, {})[unit] = (
            best.inference_ms,
            f"{Path(best.path).name} line {best.summary_line}: Inference (avg) "
            f"{best.inference_us:g} us ({t}{', ' + '+'.join(best.delegates) if best.delegates else ''})"
            f"{others}")
        report.latency_ms.setdefault(net, {})[unit] = {
            "ms": best.inference_ms, "file": best.path, "threads": best.threads,
            "delegates": [d for d in best.delegates if d not in best.declined],
            "gpu_precision_loss": best.gpu_precision_loss,
            "alternatives": [r.path for r in rs if r is not best]}
    local_units = sorted({u for _, u in runs}, key=config.UNITS.index)
    if "cpu/fp32" not in local_units:  # the fallback unit and the reward's reference
        local_units.insert(0, "cpu/fp32")
        report.missing.append(f"local/cpu/fp32: no benchmark_model output; it is the fallback "
                              f"unit and the reward's reference, so it is a target with base "
                              f"{base_p.name}'s latencies")
    threads = max(cpu_threads) if cpu_threads else None
    power = _power(pp, threads, battery_voltage_v, report)

    # processors: one per local processor; what the XML gives, the rest from base
    procs = sorted({u.split("/")[0] for u in local_units}, key=PROCESSORS.index)
    fname = Path(pp.path).name
    lines = [
        f"# {name}: a phone profile imported by autoscale profile import "
        f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}.",
        "# Inputs (every number taken from one names its file in its source):",
        f"#   {pp.path} (power_profile.xml, sha256 {pp.sha256})",
    ]
    for r in (r for rs in runs.values() for r in rs):
        lines.append(f"#   {r.path} (benchmark_model, sha256 {r.sha256})")
    lines.append(f"# Not in the inputs, from base profile {base_p.name} (see "
                 f"{report_path.name}, 'missing'):")
    body = [
        "",
        f"name = {_q(name)}",
        f"display_name = {_q(name + ' (imported)')}",
        'kind = "phone"',
        f"soc = {_q(soc or 'not stated (imported from ' + fname + ')')}",
        f"edge = {_q(base_p.edge)}",
        f"cloud = {_q(base_p.cloud)}",
        "targets = [" + ", ".join(
            [_q(f"local/{u}") for u in local_units]
            + [_q(str(t)) for t in base_p.targets if not t.is_local]) + "]",
        'fallback_unit = "cpu/fp32"',
        f"fallback_slowdown = {_num(base_p.fallback_slowdown)}",
        f"fallback_source = {_q(f'not measured (benchmark_model runs one delegate): base {base_p.name} value')}",
        "",
        "[base]",
    ]
    report.missing.append(f"base.power_w: power_profile.xml has no whole-phone base power; base "
                          f"{base_p.name}'s {base_p.base_power_w:g} W")
    body.append(f"power_w = {_num(base_p.base_power_w)}")
    wifi = power.get("base.wifi_active_w")
    body.append(f"wifi_active_w = {_num(wifi[0] if wifi else base_p.wifi_active_w)}")
    body.append(f"source = {_q(f'not measured: base {base_p.name} value')}")
    body.append("sources.power_w = " + _q(f"not measured (power_profile.xml has no whole-phone "
                                          f"base power): base {base_p.name} value"))
    body.append("sources.wifi_active_w = " + _q(wifi[1] if wifi else
                                                f"not measured: base {base_p.name} value"))
    if wifi:
        report.power["base.wifi_active_w"].update(w=wifi[0], **{"from": wifi[1]})
    body.append("")
    for proc in procs:
        bp = base_p.processors.get(proc)
        body.append(f"[processors.{proc}]")
        srcs = {}
        for key in ("busy_power_w", "idle_power_w"):
            got = power.get(f"processors.{proc}.{key}")
            if got:
                value, srcs[key] = got
                report.power[f"processors.{proc}.{key}"].update(w=value, **{"from": got[1]})
            elif bp is not None:
                value = getattr(bp, key)
                srcs[key] = f"not measured ({fname} has no {proc} figure): base {base_p.name} value"
                report.missing.append(f"processors.{proc}.{key}: not in {fname}; base "
                                      f"{base_p.name}'s {value:g} W")
            else:
                raise ProfileImportError(f"processor {proc}: neither {fname} nor base {base_p.name} "
                                   f"has its {key}; pick a --base with a {proc}")
            body.append(f"{key} = {_num(value)}")
        for key in ("cpu_interference", "mem_interference"):
            value = getattr(bp, key) if bp is not None else 0.0
            body.append(f"{key} = {_num(value)}")
            srcs[key] = (f"not measured (benchmark_model runs nothing beside the model): base "
                         f"{base_p.name} value")
        report.missing.append(f"processors.{proc}.cpu_interference, mem_interference: "
                              f"benchmark_model runs nothing beside the model; base "
                              f"{base_p.name}'s")
        body.append(f"source = {_q(f'{proc}: see sources')}")
        for key, text in srcs.items():
            body.append(f"sources.{key} = {_q(text)}")
        body.append("")
    for net in catalog:
        body.append(f"[latency_ms.{net}]")
        row = measured.get(net, {})
        srcs = {}
        for unit in local_units:
            if unit in row:
                ms, srcs[unit] = row[unit]
            elif unit in base_p.latency_ms[net]:
                ms = base_p.latency_ms[net][unit]
                srcs[unit] = f"not measured: base {base_p.name} value"
                report.missing.append(f"latency_ms.{net}.{unit}: no benchmark_model output; "
                                      f"base {base_p.name}'s {ms:g} ms")
            else:
                report.missing.append(f"latency_ms.{net}.{unit}: no benchmark_model output and "
                                      f"none in base {base_p.name}: the sim falls back to "
                                      f"cpu/fp32")
                continue
            body.append(f"{_q(unit)} = {_num(ms)}")
        body.append(f"source = {_q('see sources')}")
        for unit, text in srcs.items():
            body.append(f"sources.{_q(unit)} = {_q(text)}")
        body.append("")
    # a figure the XML gives for a processor the profile does not model is not in the profile
    report.power = {k: v for k, v in report.power.items() if "w" in v}
    lines += [f"#   {m}" for m in report.missing]
    text = "\n".join(lines + body)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, text)
    config.load_device.cache_clear()
    try:
        config.load_device(str(out))  # the written profile must load
    except AutoScaleError as e:
        raise ProfileImportError(f"the imported profile does not load: {e}") from None
    atomic_write(report_path, json.dumps(report.to_json(), indent=1) + "\n")
    return report


# --------------------------------------------------------------------------------------------
# Validation of what the inputs cover


#: SoC names a measurement's ``measured_on`` or a profile's ``soc`` can carry, lower case.
_SOC = re.compile(r"\b(snapdragon|exynos|kirin|dimensity|helio|tensor)\s*(g?[0-9]{1,4}\+?)",
                  re.IGNORECASE)
_SDM = re.compile(r"\b(?:sdm|sm|msm)([0-9]{3,4})\b", re.IGNORECASE)


def soc_key(text: str | None) -> str | None:
    """``"snapdragon 845"`` for "Qualcomm Snapdragon 845", "Pixel 3 (Snapdragon 845)" or
    "sdm845"; None when ``text`` names no SoC this reader knows."""
    if not text:
        return None
    m = _SOC.search(text)
    if m:
        return f"{m.group(1).lower()} {m.group(2).lower()}"
    m = _SDM.search(text)
    return f"snapdragon {m.group(1)}" if m and len(m.group(1)) == 3 else None


@dataclass(frozen=True)
class Coverage:
    """``autoscale validate``'s rows for an imported profile, split by whether they compare
    like with like."""

    target: str
    """What was asked for: a device the measurements name, or a SoC."""
    compared: list[validate.Comparison]
    """Rows whose number the inputs gave under the row's own conditions (same SoC, network,
    precision, delegate and, on the CPU, threads), with the profile's value in ``world``."""
    not_covered: list[tuple[validate.Measurement, str]]
    """Every other latency / power row of the target, with the reason it is not compared."""
    ratio_rows: int
    """Within-framework ratio rows of the target: an import gives absolute figures, not ratios."""


def _row_delegate(conditions: str) -> str | None:
    """The delegate a latency row names: ``nnapi``, ``hexagon``, ``gpu``, ``cpu`` or None."""
    c = conditions.lower()
    for name in ("nnapi", "hexagon", "gpu", "cpu"):
        if name in c:
            return name
    return None


def _row_threads(conditions: str) -> int | None:
    m = re.search(r"\b([0-9]+)\s*threads?\b", conditions, re.IGNORECASE)
    return int(m.group(1)) if m else None


def _log_delegate(entry: dict[str, Any]) -> str:
    ran = [d for d in entry.get("delegates") or [] if d != "xnnpack"]
    if ran:
        return "+".join(ran)
    return "xnnpack" if "xnnpack" in (entry.get("delegates") or []) else "cpu"


def _why_not(m: validate.Measurement, soc: str | None, report: dict[str, Any],
             names: set[str]) -> str | None:
    """Why row ``m`` does not compare like with like with the import (None: it does)."""
    row_soc = soc_key(m.measured_on)
    if soc is None:
        return "the profile names no SoC (pass --soc), so the row's SoC cannot be matched"
    if row_soc != soc:
        return f"measured on {m.measured_on}, the profile is a {soc.title()}"
    if m.quantity == "latency_ms":
        entry = report.get("latency_ms", {}).get(m.network, {}).get(m.unit)
        if entry is None or Path(entry["file"]).name not in names:
            return "no benchmark_model output for this network and unit (the profile's value is " \
                   "the base's)"
        log = f"{Path(entry['file']).name}"
        want, got = _row_delegate(m.conditions), _log_delegate(entry)
        if want is None:
            return f"the row's conditions ({m.conditions!r}) name no delegate to match {log} with"
        if want != got:
            return f"delegate: the row is {want}, {log} ran {got}"
        threads = _row_threads(m.conditions)
        if want == "cpu" and threads is not None:
            if entry.get("threads") is None:
                return f"threads: the row is {threads} threads, {log} does not state its count"
            if entry["threads"] != threads:
                return f"threads: the row is {threads} threads, {log} ran {entry['threads']}"
        return None
    if m.quantity == "power_w":
        entry = report.get("power", {}).get(m.unit)
        if entry is None or "w" not in entry:
            return "not given by the power_profile.xml (the profile's value is the base's)"
        missing = [i for i in entry.get("items", []) if i not in m.conditions]
        if missing:
            return f"the row is not built from {', '.join(missing)}, which the import used"
        cores = re.search(r"\bx\s*([0-9]+)\b", m.conditions)
        if entry.get("cores") is not None and cores and int(cores.group(1)) != entry["cores"]:
            return f"cores: the row counts {cores.group(1)}, the import {entry['cores']}"
        return None
    return f"quantity {m.quantity} is not something an import gives"


def covered_validation(profile: str | os.PathLike, target: str,
                       inputs: Sequence[str | os.PathLike] | None = None) -> Coverage:
    """``autoscale validate``'s latency and power rows for ``target`` against the imported
    ``profile``, compared only where like for like.

    ``target`` is a device the bundled measurements name (``mi8pro``: its rows, whatever phone
    they were measured on) or a SoC (``"Snapdragon 845"``: every row measured on a phone with
    that SoC, whichever bundled device it validates). A row is compared when the profile's
    ``soc`` is the row's SoC, its number came from one of ``inputs`` (default: every input in
    ``<stem>.import.json``) and the conditions match: for latency the same network and unit,
    the same delegate (CPU, XNNPACK, GPU, NNAPI, Hexagon: an NNAPI row is not a Hexagon log) and,
    on the CPU, the same thread count (a log that does not state it does not match); for power
    the same ``power_profile.xml`` items and core count. Every other row is listed in
    ``not_covered`` with the reason.

    Raises:
        ProfileImportError: ``target`` is neither a measured device nor a SoC with rows, or the
            import report beside ``profile`` is missing.
    """
    profile = Path(profile)
    report_path = profile.with_name(profile.stem + ".import.json")
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as e:
        raise ProfileImportError(f"{report_path}: cannot read the import report written beside "
                                 f"{profile.name} ({e}); re-run autoscale profile import") from None
    if inputs is None:
        inputs = [i["file"] for i in report.get("inputs", [])]
    names = {Path(p).name for p in inputs}
    rows: list[validate.Measurement] = []
    for path in sorted(validate.MEASUREMENTS_DIR.glob("*.csv")):
        rows += validate.read_measurements(path)[1]
    devices = sorted({m.device for m in rows if m.device and "/" not in m.device})
    if target in devices:
        mine = [m for m in rows if m.device == target
                or m.quantity == "latency_ratio" and m.device.partition("/")[0] == target]
    else:
        key = soc_key(target)
        socs = sorted({k for m in rows if m.device and "/" not in m.device
                       and (k := soc_key(m.measured_on))})
        if key is None or key not in socs:
            raise ProfileImportError(
                f"--validate-as {target!r}: neither a device the measurements name "
                f"({', '.join(devices)}) nor a SoC they were measured on "
                f"({', '.join(s.title() for s in socs)})")
        mine = [m for m in rows if m.device and "/" not in m.device
                and soc_key(m.measured_on) == key]
    ratio = [m for m in mine if m.quantity == "latency_ratio"]
    mine = [m for m in mine if m.quantity in ("latency_ms", "power_w")]
    soc = soc_key(str(config.read_toml(profile).get("soc", "")))
    profiles = {m.device: str(profile) for m in mine}
    compared, not_covered = [], []
    for m in mine:
        why = _why_not(m, soc, report, names)
        if why is None:
            world = validate.world_value(m, profiles)
            if world is None:
                not_covered.append((m, f"the profile has no {m.unit}"))
            else:
                compared.append(validate.Comparison(m, world))
        else:
            not_covered.append((m, why))
    return Coverage(target=target, compared=compared, not_covered=not_covered,
                    ratio_rows=len(ratio))


# --------------------------------------------------------------------------------------------
# CLI


def benchmarks_in(directory: str | os.PathLike) -> list[tuple[str, str, str]]:
    """``(network, unit, file)`` of the files in ``directory`` named
    ``<network>_<processor>_<precision>[_t<threads>].txt|.log``; other files are refused."""
    d = Path(directory)
    if not d.is_dir():
        raise ProfileImportError(f"--benchmark-dir {d}: not a directory")
    out, odd = [], []
    for p in sorted(d.iterdir()):
        m = LOG_NAME.match(p.name)
        if m:
            out.append((m["net"], f"{m['proc']}/{m['prec']}", str(p)))
        elif p.is_file() and not p.name.startswith("."):
            odd.append(p.name)
    if odd:
        raise ProfileImportError(f"--benchmark-dir {d}: {', '.join(odd)} not named "
                           f"<network>_<processor>_<precision>[_t<threads>].txt (e.g. "
                           f"mnv1_gpu_fp16.txt); rename or pass them with --benchmark")
    return out
