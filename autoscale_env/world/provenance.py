"""Where every number of the world comes from: sourced or ``estimate``, by file and kind.

The data files (``autoscale_env/data``) carry their provenance next to the values (see
``docs/calibration.md``, "Provenance fields"):

* ``source = "..."`` in a table covers every number of that table without an entry of its own;
  ``<prefix>_source`` covers the top-level fields named ``<prefix>_*`` (``fallback_source`` ->
  ``fallback_slowdown``).
* ``sources = { field = "..." }`` gives one number (or one list) its own text.
* ``ranges = { field = [lo, hi] }`` (or one ``[lo, hi]`` per item of a list) gives an estimate's
  plausible span; without one, +-50 % of the value (:data:`DEFAULT_RELATIVE_RANGE`).

A text that starts with ``estimate`` (or says ``[reconstructed]``) marks an estimate; anything else
is read as a citation. :func:`collect` returns one :class:`Entry` per numeric field (a list is one
entry of several numbers), which is what ``autoscale provenance`` counts and what a sensitivity
analysis enumerates and perturbs. State bins (``features*.toml``) and reward weights
(``rewards.toml``) are design choices, not claims about the world, and are not counted.

The report keeps two worlds apart: **the paper's world** (the phones, the tablet, the cloud, the
links, the settings, the scenarios and the workloads) and **profiles fitted from traces** by
``autoscale calibrate`` (``display_name`` ending in "(fitted)", or a ``<name>.calibration.json``
beside the profile; a fitted phone's ``edge``/``cloud`` profiles belong to it). A fitted number
cites its trace, but it counts as sourced only when its profile passes its own gap check: every
target's median ``|log(sim / measured)|`` latency error in the gap report (``autoscale gap``,
``docs/generated/gap.json`` by default, written by ``scripts/docs_results.py``) at most :data:`GAP_MEDIAN_LOG_ERROR_MAX`. Without a passing gap
report a fitted number counts as not sourced.
"""

from __future__ import annotations

import json
import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from autoscale_env.world.config import DATA_DIR, read_toml

#: Files that describe the world (relative to the data directory); devices/*.toml are added.
WORLD_FILES = ("workloads.toml", "links.toml", "scenarios.toml", "settings.toml")
#: A fitted profile's numbers count as sourced only when every target's median |log(sim/measured)|
#: latency error in its gap report is at most this (0.15: about 16 %; the calibration's target).
GAP_MEDIAN_LOG_ERROR_MAX = 0.15
#: Where the repository keeps the gap report of the bundled fitted profile (a source checkout).
DEFAULT_GAP_REPORT = Path(__file__).resolve().parents[2] / "docs" / "generated" / "gap.json"
#: The span of an estimate without an explicit range: value x (1 -+ this).
DEFAULT_RELATIVE_RANGE = 0.5
_META_KEYS = ("source", "sources", "ranges")


@dataclass(frozen=True)
class Entry:
    """One numeric field of a data file (a scalar, or a list of numbers) and its provenance."""

    file: str
    """Path relative to the data directory, e.g. ``devices/mi8pro.toml``."""
    path: tuple[str, ...]
    """Keys from the top of the file, e.g. ``("latency_ms", "mnv1", "gpu/fp32")``."""
    value: float | tuple[float, ...]
    kind: str
    """What the number is about: latency, power, interference, radio, signal, apps, noise,
    accuracy, workload, scenario."""
    estimate: bool
    source: str
    range: tuple[float, float] | tuple[tuple[float, float], ...]
    """Plausible span: ``(lo, hi)``, or one pair per list item."""
    explicit_range: bool

    @property
    def name(self) -> str:
        """A stable parameter name, ``file:key.key``."""
        return f"{self.file}:{'.'.join(self.path)}"

    @property
    def count(self) -> int:
        """How many numbers the entry holds."""
        return len(self.value) if isinstance(self.value, tuple) else 1


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_estimate(text: str) -> bool:
    """Whether a provenance text marks an estimate (rather than citing a source)."""
    t = text.strip().lower()
    return (not t or t.startswith(("estimate", "[estimate]", "reconstructed", "[reconstructed]"))
            or "[reconstructed]" in t)


def _kind(file: str, path: tuple[str, ...]) -> str:
    field = path[-1]
    if file.startswith("devices/"):
        if path[0] == "latency_ms" or field in ("fallback_slowdown", "overhead_ms"):
            return "latency"
        if path[0] == "processors" and field.endswith("_interference"):
            return "interference"
        return "power"
    if file == "workloads.toml":
        return "accuracy" if field.startswith("accuracy_") else "workload"
    if file == "links.toml":
        return "radio"
    if file == "scenarios.toml":
        return "scenario"
    if path[0] == "apps" or field.startswith("app_"):
        return "apps"
    if field.endswith("_sigma"):
        return "noise"
    return "signal"


def _default_range(value: float) -> tuple[float, float]:
    lo, hi = value * (1 - DEFAULT_RELATIVE_RANGE), value * (1 + DEFAULT_RELATIVE_RANGE)
    return (min(lo, hi), max(lo, hi))


def _walk(file: str, table: dict[str, Any], path: tuple[str, ...],
          inherited: str) -> Iterator[Entry]:
    own = table.get("source")
    text_default = own if isinstance(own, str) else inherited
    sources = table.get("sources") if isinstance(table.get("sources"), dict) else {}
    ranges = table.get("ranges") if isinstance(table.get("ranges"), dict) else {}
    for key, value in table.items():
        if key in _META_KEYS or key.endswith("_source"):
            continue
        if isinstance(value, dict):
            yield from _walk(file, value, path + (key,), text_default)
            continue
        is_list = isinstance(value, list) and value and all(_is_number(v) for v in value)
        if not (_is_number(value) or is_list):
            continue
        prefix_source = table.get(f"{key.split('_')[0]}_source")
        text = sources.get(key) or (prefix_source if isinstance(prefix_source, str) else None) \
            or text_default or ""
        span = ranges.get(key)
        if is_list:
            val: Any = tuple(float(v) for v in value)
            rng: Any = (tuple((float(a), float(b)) for a, b in span) if span
                        else tuple(_default_range(v) for v in val))
        else:
            val = float(value)
            rng = (float(span[0]), float(span[1])) if span else _default_range(val)
        yield Entry(file=file, path=path + (key,), value=val, kind=_kind(file, path + (key,)),
                    estimate=is_estimate(text), source=text or "estimate: no source given",
                    range=rng, explicit_range=span is not None)


def world_files(data_dir: Path | str = DATA_DIR) -> list[Path]:
    """The data files that describe the world, in report order."""
    d = Path(data_dir)
    return [d / f for f in WORLD_FILES] + sorted((d / "devices").glob("*.toml"))


def collect(data_dir: Path | str = DATA_DIR) -> list[Entry]:
    """Every numeric field of the world's data files with its provenance."""
    d = Path(data_dir)
    out: list[Entry] = []
    for path in world_files(d):
        rel = path.relative_to(d).as_posix()
        out.extend(_walk(rel, read_toml(path), (), ""))
    return out


def estimates(data_dir: Path | str = DATA_DIR) -> list[Entry]:
    """The entries marked ``estimate`` (what a sensitivity analysis perturbs)."""
    return [e for e in collect(data_dir) if e.estimate]


@dataclass(frozen=True)
class FittedStatus:
    """A profile fitted from traces and whether its numbers count as sourced."""

    profile: str
    """The fitted phone profile the file belongs to (``host`` for ``host_cloud.toml``)."""
    passes: bool
    reason: str


def _gap_status(profile: str, gap_report: Path | str | None) -> tuple[bool, str]:
    path = Path(gap_report) if gap_report else None
    if path is None or not path.is_file():
        return False, "no gap report"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return False, f"gap report {path} unreadable ({e})"
    if report.get("profile") != profile:
        return False, f"the gap report {path.name} is for profile {report.get('profile')!r}"
    errors = [t["latency_median_abs_log"] for tr in report.get("traces", {}).values()
              for t in tr.get("targets", {}).values() if "latency_median_abs_log" in t]
    if not errors:
        return False, f"gap report {path.name} has no latency errors"
    worst = max(errors)
    verdict = "passes" if worst <= GAP_MEDIAN_LOG_ERROR_MAX else "fails"
    return worst <= GAP_MEDIAN_LOG_ERROR_MAX, (
        f"gap check {verdict}: median latency |log(sim/measured)| {min(errors):.2f}-{worst:.2f} "
        f"per target (bound {GAP_MEDIAN_LOG_ERROR_MAX:g})")


def fitted_profiles(data_dir: Path | str = DATA_DIR,
                    gap_report: Path | str | None = DEFAULT_GAP_REPORT) -> dict[str, FittedStatus]:
    """Data files of profiles fitted from traces (``devices/host.toml``...) and their gap status."""
    d = Path(data_dir)
    fitted: dict[str, str] = {}
    docs = {p: read_toml(p) for p in sorted((d / "devices").glob("*.toml"))}
    for path, doc in docs.items():
        name = path.stem
        if str(doc.get("display_name", "")).rstrip().endswith("(fitted)") \
                or (path.parent / f"{name}.calibration.json").is_file():
            fitted[path.relative_to(d).as_posix()] = name
    # A fitted phone's edge and cloud profiles are part of its fit.
    for path, doc in docs.items():
        root = fitted.get(path.relative_to(d).as_posix())
        if root is None or doc.get("kind") != "phone":
            continue
        for ref in (doc.get("edge"), doc.get("cloud")):
            if isinstance(ref, str) and ref:
                rel = f"devices/{Path(ref).stem}.toml"
                if rel in fitted or (d / rel).is_file():
                    fitted[rel] = root
    out = {}
    for rel, root in fitted.items():
        passes, reason = _gap_status(root, gap_report)
        out[rel] = FittedStatus(profile=root, passes=passes, reason=reason)
    return out


def counts_as_sourced(e: Entry, fitted: dict[str, FittedStatus]) -> bool:
    """Whether entry ``e`` counts as sourced: it cites a source and, in a fitted profile, that
    profile passes its gap check."""
    status = fitted.get(e.file)
    return not e.estimate and (status is None or status.passes)


def counts(entries: list[Entry], by: str = "file") -> dict[tuple[str, str], list[int]]:
    """(file or kind, kind or file) -> [sourced numbers, estimated numbers]."""
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for e in entries:
        key = (e.file, e.kind) if by == "file" else (e.kind, e.file)
        out[key][1 if e.estimate else 0] += e.count
    return dict(sorted(out.items()))


def _ranking(path: str | None) -> dict[str, float]:
    """Parameter name -> importance from a sensitivity.csv (largest mu_star or ST over metrics)."""
    if not path:
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    score: dict[str, float] = {}
    for r in rows:
        for col in ("mu_star", "ST"):
            try:
                v = abs(float(r.get(col) or "nan"))
            except ValueError:
                continue
            if v == v:
                score[r["parameter"]] = max(score.get(r["parameter"], 0.0), v)
    return score


def _share(entries: list[Entry], ok) -> tuple[int, int]:
    total = sum(e.count for e in entries)
    return sum(e.count for e in entries if ok(e)), total


def report(entries: list[Entry], *, by: str = "file", top: int = 15,
           ranking: str | None = None, fitted: dict[str, FittedStatus] | None = None) -> str:
    """The Markdown report ``autoscale provenance`` prints.

    ``fitted`` maps the files of fitted profiles to their gap status (default:
    :func:`fitted_profiles` of the bundled data and gap report).
    """
    if fitted is None:
        fitted = fitted_profiles()
    world = [e for e in entries if e.file not in fitted]
    fit = [e for e in entries if e.file in fitted]
    ws, wt = _share(world, lambda e: not e.estimate)
    total = sum(e.count for e in entries)
    counted = sum(e.count for e in entries if counts_as_sourced(e, fitted))
    est = sum(e.count for e in entries if e.estimate)
    lines = ["# Provenance of the world's numbers\n",
             f"**The paper's world** (phones, tablet, cloud, links, settings, scenarios, workloads): "
             f"{ws} of {wt} numbers carry a source ({100 * ws / max(wt, 1):.1f} % sourced).\n"]
    for profile in sorted({s.profile for s in fitted.values()}):
        members = [e for e in fit if fitted[e.file].profile == profile]
        if not members:
            continue
        status = next(s for f, s in fitted.items() if s.profile == profile)
        cited, n = _share(members, lambda e: not e.estimate)
        lines.append(f"**Fitted profile {profile}** ({', '.join(sorted({e.file for e in members}))}): "
                     f"{cited} of {n} numbers cite a trace; {status.reason}: counted as "
                     f"{'sourced' if status.passes else 'not sourced'}.\n")
    lines += [f"All together: {counted} of {total} numbers count as sourced "
              f"({100 * counted / max(total, 1):.1f} %), {est} are estimates "
              f"({sum(e.estimate for e in entries)} parameters).\n",
              f"| {by} | {'kind' if by == 'file' else 'file'} | sourced | estimate | sourced % |",
              "|---|---|---|---|---|"]
    for (a, b), (s, e) in counts(world, by).items():
        lines.append(f"| {a} | {b} | {s} | {e} | {100 * s / max(s + e, 1):.0f} |")
    for (a, b), (s, e) in counts(fit, by).items():
        ok = fitted[a if by == "file" else b].passes
        lines.append(f"| {a} (fitted) | {b} | {s if ok else 0} | {e if ok else s + e} | "
                     f"{100 * s / max(s + e, 1) if ok else 0:.0f} |")
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in world:
        per_kind[e.kind][1 if e.estimate else 0] += e.count
    lines += ["", "The paper's world by kind:", "",
              "| kind | sourced | estimate | sourced % |", "|---|---|---|---|"]
    for k, (s, e) in sorted(per_kind.items()):
        lines.append(f"| {k} | {s} | {e} | {100 * s / max(s + e, 1):.0f} |")
    ests = [e for e in entries if e.estimate]
    score = _ranking(ranking)
    if score:
        ests.sort(key=lambda e: -score.get(e.name, 0.0))
        title = f"Estimates that matter most (ranked by {ranking})"
    else:
        # Without a sensitivity run: the radio/link and signal estimates first, the group the
        # calibration note's Correction found to dominate the results.
        order = {"radio": 0, "signal": 1, "power": 2, "latency": 3}
        ests.sort(key=lambda e: (order.get(e.kind, 9), e.file, e.path))
        title = ("Estimates to check first (radio/link and signal; rank them with "
                 "`autoscale sensitivity` and `--ranking sensitivity.csv`)")
    lines += ["", f"{title}:", "", "| parameter | value | range | reason |", "|---|---|---|---|"]
    for e in ests[:top]:
        reason = e.source.split(":", 1)[-1].strip()
        lines.append(f"| {e.name} | {_fmt(e.value)} | {_fmt(e.range)}"
                     f"{'' if e.explicit_range else ' (default)'} | {reason[:110]} |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return f"{v:g}"
