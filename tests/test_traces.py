"""The trace format (issue #6).

Round trips, refusals naming file/row/column, cut recordings, no overwriting, fuzzing of the
loader, bundled traces.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscale_env.traces import format as traces
from autoscale_env.backends.sim import SimBackend
from autoscale_env.world.config import device_names
from autoscale_env.world.errors import DependencyMissing, TraceFormatError, UnknownNameError
from agents.cli import main as cli_main
from autoscale_env.traces.recorder import record


def record_main(argv):
    """``autoscale record ARGV``."""
    return cli_main(["record", *argv])


ARRAYS = ("request", "timestamp_s", "network", "co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm",
          "rssi_p2p_dbm", "latency_ms", "energy_mj", "accuracy", "energy_source")


def assert_same(a: traces.Trace, b: traces.Trace, n: int | None = None) -> None:
    """Bit-for-bit equality of the first ``n`` requests (all by default)."""
    n = b.n_requests if n is None else n
    assert a.target_names == b.target_names
    for name in ARRAYS:
        x, y = getattr(a, name)[:n], getattr(b, name)[:n]
        if x.dtype.kind == "f":
            assert x.tobytes() == y.tobytes(), name
        else:
            assert np.array_equal(x, y), name


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A 12-request static recording, plain CSV (rows: 12 x 9 targets)."""
    out = tmp_path_factory.mktemp("small") / "small.csv"
    return record(SimBackend("mi8pro", "non_streaming", "static"), 12, out, seed=3,
                  progress=False)


@pytest.fixture(scope="module")
def long(tmp_path_factory) -> dict[str, Path]:
    """A 2000-request dynamic recording as .csv and .csv.gz."""
    d = tmp_path_factory.mktemp("long")
    return {suffix: record(SimBackend("galaxy_s10e", "non_streaming", "dynamic"), 2000,
                           d / f"long{suffix}", seed=1, progress=False)
            for suffix in (".csv", ".csv.gz")}


def lines_of(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1]


def columns(lines: list[str]) -> list[str]:
    return lines[1].split(",")


def set_cell(lines: list[str], row: int, column: str, value: str) -> list[str]:
    """Replace data row ``row`` (1-based) at ``column``."""
    out = list(lines)
    k = columns(lines).index(column)
    fields = out[1 + row].split(",")
    fields[k] = value
    out[1 + row] = ",".join(fields)
    return out


def save(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- round trips -----------------------------------------------------------------------------


def test_round_trip_is_bit_exact_and_matches_the_sim(small):
    t = traces.load_trace(small)
    sim = SimBackend("mi8pro", "non_streaming", "static")
    from gymnasium.utils import seeding
    sim.reset(seeding.np_random(3)[0])
    block = sim.next_block()
    assert t.n_requests == 12 and t.complete
    assert t.latency_ms.tobytes() == np.ascontiguousarray(block.latency_ms[:12]).tobytes()
    assert t.energy_mj.tobytes() == np.ascontiguousarray(block.energy_mj[:12]).tobytes()
    assert np.array_equal(t.network, block.network[:12])
    assert t.header.device == "mi8pro" and t.header.provenance["kind"] == "simulated"
    assert t.header.provenance["seed"] == 3 and t.header.episode_requests == 101


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_write_trace_round_trips_every_format(small, tmp_path, suffix):
    t = traces.load_trace(small)
    out = traces.write_trace(t, tmp_path / f"copy{suffix}")
    assert_same(traces.load_trace(out), t)
    with pytest.raises(FileExistsError):
        traces.write_trace(t, out)


def test_record_straight_to_parquet_equals_csv(small, tmp_path):
    out = record(SimBackend("mi8pro", "non_streaming", "static"), 12, tmp_path / "p.parquet",
                 seed=3, progress=False)
    assert out.read_bytes()[:4] == b"PAR1" and not list(tmp_path.glob("*.partial*"))
    assert_same(traces.load_trace(out), traces.load_trace(small))


def test_parquet_without_pyarrow_names_the_extra(small, tmp_path, monkeypatch):
    out = traces.write_trace(traces.load_trace(small), tmp_path / "x.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DependencyMissing, match=r"pyarrow.*autoscale-env\[parquet\]"):
        traces.load_trace(out)


def test_comments_blank_lines_crlf_and_column_order_are_accepted(small, tmp_path):
    lines = lines_of(small)
    names = columns(lines)
    perm = list(reversed(range(len(names))))
    body = [",".join(line.split(",")[k] for k in perm) for line in lines[1:]]
    text = [lines[0], "# a comment", "", *body[:3], "", "# another", *body[3:]]
    path = tmp_path / "crlf.csv"
    path.write_bytes(("\r\n".join(text) + "\r\n").encode())
    assert_same(traces.load_trace(path), traces.load_trace(small))


def test_extra_columns_are_ignored(small, tmp_path):
    lines = lines_of(small)
    lines = [lines[0], lines[1] + ",note"] + [line + ",hello" for line in lines[2:]]
    assert_same(traces.load_trace(save(tmp_path / "extra.csv", lines)), traces.load_trace(small))


# ---- refusals name the file, the row and the column -------------------------------------------


def drop_column(lines: list[str], column: str) -> list[str]:
    k = columns(lines).index(column)
    return [lines[0]] + [",".join(f for j, f in enumerate(line.split(",")) if j != k)
                         for line in lines[1:]]


CASES = {
    # name: (edit of the lines, column named, data row named (0: the column header))
    "missing column": (lambda ls: drop_column(ls, "latency_ms"), "latency_ms", 0),
    "missing energy column": (lambda ls: drop_column(ls, "energy_mj"), "energy_mj", 0),
    "wrong type": (lambda ls: set_cell(ls, 3, "latency_ms", "fast"), "latency_ms", 3),
    "wrong int type": (lambda ls: set_cell(ls, 4, "request", "1.5"), "request", 4),
    "empty cell": (lambda ls: set_cell(ls, 2, "energy_mj", ""), "energy_mj", 2),
    "negative latency": (lambda ls: set_cell(ls, 5, "latency_ms", "-1.5"), "latency_ms", 5),
    "nan latency": (lambda ls: set_cell(ls, 6, "latency_ms", "nan"), "latency_ms", 6),
    "inf latency": (lambda ls: set_cell(ls, 7, "latency_ms", "inf"), "latency_ms", 7),
    "negative energy": (lambda ls: set_cell(ls, 8, "energy_mj", "-0.001"), "energy_mj", 8),
    "infinite energy": (lambda ls: set_cell(ls, 9, "energy_mj", "-inf"), "energy_mj", 9),
    "accuracy above 1": (lambda ls: set_cell(ls, 10, "accuracy", "1.5"), "accuracy", 10),
    "accuracy below 0": (lambda ls: set_cell(ls, 11, "accuracy", "-0.1"), "accuracy", 11),
    "cpu above 100 %": (lambda ls: set_cell(ls, 1, "co_cpu_pct", "150"), "co_cpu_pct", 1),
    "positive rssi": (lambda ls: set_cell(ls, 1, "rssi_wifi_dbm", "10"), "rssi_wifi_dbm", 1),
    "unknown target": (lambda ls: set_cell(ls, 12, "target", "local/npu/int8"), "target", 12),
    "target not in trace": (lambda ls: set_cell(ls, 13, "target", "local/cpu/fp16"), "target", 13),
    "unknown network": (lambda ls: set_cell(ls, 14, "network", "alexnet"), "network", 14),
    "layer count": (lambda ls: set_cell(ls, 15, "conv", "999"), "conv", 15),
    "energy source": (lambda ls: set_cell(ls, 16, "energy_source", "guess"), "energy_source", 16),
    # rows 1-9 are request 0's nine targets: make row 2 repeat row 1's target
    "duplicate (request, target)": (
        lambda ls: set_cell(ls, 2, "target", ls[2].split(",")[columns(ls).index("target")]),
        "target", 2),
    "context differs within a request": (
        lambda ls: set_cell(ls, 3, "co_mem_pct", "12.345"), "co_mem_pct", 3),
    "missing field": (lambda ls: ls[:4] + [ls[4].rsplit(",", 1)[0]] + ls[5:], "energy_source", 3),
    # full coverage: request 1 (rows 10-18) without its 4th target
    "missing target row": (lambda ls: ls[:1 + 13] + ls[1 + 14:], "target", 10),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("compress", [False, True])
def test_malformed_traces_are_refused_naming_file_row_and_column(small, tmp_path, case, compress):
    edit, column, row = CASES[case]
    text = "\n".join(edit(lines_of(small))) + "\n"
    path = tmp_path / ("bad.csv.gz" if compress else "bad.csv")
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    with pytest.raises(TraceFormatError) as info:
        traces.load_trace(path)
    message = str(info.value)
    assert str(path) in message and f"'{column}'" in message, message
    assert info.value.column == column and info.value.row == row, message
    if row:
        assert f"row {row} (line {row + 2})" in message, message


@pytest.mark.parametrize("case", ["wrong type", "unknown network", "missing field",
                                  "missing target row"])
def test_refusals_name_the_row_when_parsed_in_small_chunks(small, tmp_path, monkeypatch, case):
    """Rows are parsed into columns a chunk at a time (bounded memory for long traces); a bad cell
    in a later chunk is still named by its own row and line, not its place in the chunk."""
    monkeypatch.setattr(traces, "_PARSE_CHUNK_ROWS", 4)
    edit, column, row = CASES[case]
    path = save(tmp_path / "bad.csv", edit(lines_of(small)))
    with pytest.raises(TraceFormatError) as info:
        traces.load_trace(path)
    assert info.value.column == column and info.value.row == row, str(info.value)
    assert f"row {row} (line {row + 2})" in str(info.value)


def test_chunked_parse_equals_one_pass(long, monkeypatch):
    """Chunk boundaries (7 rows: never aligned with the 9 target rows of a request) change
    nothing: bit-identical to parsing every row in one chunk."""
    whole = traces.load_trace(long[".csv.gz"])
    monkeypatch.setattr(traces, "_PARSE_CHUNK_ROWS", 7)
    assert_same(traces.load_trace(long[".csv.gz"]), whole)
    assert whole.n_requests == 2000


HEADER_CASES = {
    "no header": lambda h: None,
    "not json": lambda h: "# autoscale-trace {device: mi8pro",
    "unknown scenario": lambda h: {**h, "scenario": "gaming"},
    "unknown setting": lambda h: {**h, "setting": "windy"},
    "no provenance": lambda h: {k: v for k, v in h.items() if k != "provenance"},
    "future version": lambda h: {**h, "version": 2},
    "bad target": lambda h: {**h, "targets": ["local/cpu"]},
    "target the phone lacks": lambda h: {**h, "targets": h["targets"] + ["cloud/dsp/int8"]},
    "bad coverage": lambda h: {**h, "coverage": "most"},
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_malformed_headers_are_refused(small, tmp_path, case):
    lines = lines_of(small)
    header = json.loads(lines[0][len(traces.HEADER_PREFIX):])
    new = HEADER_CASES[case](header)
    if new is None:
        lines = lines[1:]
    elif isinstance(new, str):
        lines[0] = new
    else:
        lines[0] = traces.HEADER_PREFIX + json.dumps(new)
    path = save(tmp_path / "h.csv", lines)
    with pytest.raises(TraceFormatError, match="header|line 1") as info:
        traces.load_trace(path)
    assert str(path) in str(info.value)


def test_parquet_refusals_name_file_row_and_column(small, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    good = traces.write_trace(traces.load_trace(small), tmp_path / "g.parquet")
    table = pq.read_table(good)
    meta = table.schema.metadata

    def save_table(t, name):
        path = tmp_path / name
        pq.write_table(t.replace_schema_metadata(meta), path)
        return path

    path = save_table(table.drop_columns(["latency_ms"]), "nolat.parquet")
    with pytest.raises(TraceFormatError, match=r"nolat\.parquet.*'latency_ms' is missing"):
        traces.load_trace(path)
    lat = table.column("latency_ms").to_numpy().copy()
    lat[4] = -2.0
    k = table.column_names.index("latency_ms")
    path = save_table(table.set_column(k, "latency_ms", pa.array(lat)), "neg.parquet")
    with pytest.raises(TraceFormatError, match=r"neg\.parquet, row 5, column 'latency_ms'"):
        traces.load_trace(path)
    path = save_table(table.set_column(k, "latency_ms", pa.array([str(x) for x in lat])),
                      "str.parquet")
    with pytest.raises(TraceFormatError, match=r"str\.parquet.*'latency_ms'.*type string"):
        traces.load_trace(path)


# ---- cut recordings -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_recording_cut_at_60_percent_of_its_bytes_still_loads(long, tmp_path, suffix):
    full = traces.load_trace(long[suffix])
    assert full.n_requests == 2000
    data = long[suffix].read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(0.6 * len(data))])
    with pytest.warns(traces.TraceCutWarning):
        t = traces.load_trace(cut)
    assert 0.4 * 2000 < t.n_requests < 2000 and t.complete
    assert_same(t, full, t.n_requests)  # exactly the first requests, every target known


@pytest.mark.slow
def test_every_cut_of_a_recording_loads_a_prefix(small, tmp_path):
    data = small.read_bytes()
    full = traces.load_trace(small)
    header_end = data.index(b"\n", data.index(b"\n") + 1) + 1
    path = tmp_path / "c.csv"
    for k in range(header_end, len(data), 97):
        path.write_bytes(data[:k])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", traces.TraceCutWarning)
            t = traces.load_trace(path)
        assert_same(t, full, t.n_requests)


@pytest.mark.slow
def test_recording_killed_with_sigkill_still_loads(tmp_path):
    out = tmp_path / "killed.csv.gz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoscale_env", "record", "--requests", "1000000", "--out",
         str(out), "--batch-size", "20", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (not out.exists() or out.stat().st_size < 200_000) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", traces.TraceCutWarning)
        t = traces.load_trace(out)
    assert t.n_requests >= 100 and t.complete


# ---- never overwrite -------------------------------------------------------------------------


def test_recording_never_overwrites_without_force(tmp_path, capsys):
    out = tmp_path / "r.csv.gz"
    argv = ["--requests", "30", "--setting", "static", "--out", str(out), "--quiet"]
    assert record_main(argv) == 0
    before = out.read_bytes()
    assert record_main(argv + ["--seed", "9"]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    with pytest.raises(FileExistsError):
        record(SimBackend(), 5, out, seed=0, progress=False)
    assert out.read_bytes() == before
    assert record_main(argv + ["--seed", "9", "--force"]) == 0
    assert out.read_bytes() != before and traces.load_trace(out).header.provenance["seed"] == 9


@pytest.mark.slow
def test_script_and_cli_options(tmp_path):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "s.csv"
    done = subprocess.run(
        [sys.executable, str(root / "scripts" / "record_traces.py"), "--backend", "sim",
         "--device", "moto_x_force", "--scenario", "translation", "--setting", "static",
         "--requests", "7", "--seed", "2", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    t = traces.load_trace(out)
    assert (t.n_requests, t.header.device, t.header.scenario) == (7, "moto_x_force", "translation")
    assert len(t.targets) == 8  # no DSP on the Moto X Force
    assert record_main(["--device", "nokia3310", "--out", str(tmp_path / "n.csv"), "--quiet"]) == 2
    assert record_main(["--out", str(tmp_path / "n.txt"), "--quiet"]) == 2


# ---- fuzzing: the loader loads or raises TraceFormatError, nothing else ----------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("tiny") / "tiny.csv"
    record(SimBackend("mi8pro", "translation", "dynamic"), 3, out, seed=0, progress=False)
    return out.read_bytes()


CELL_TEXT = st.one_of(
    st.sampled_from(["", "nan", "-1", "1e400", "inf", "1.5", "0", "-0.0", "local/cpu/fp32",
                     "mbert", "model", "\"", "\"a,b\"", "99999999999999999999999", "\x00",
                     "é", "1_0", " 3 "]),
    st.text(max_size=12))


def _mutate(base: bytes, data) -> bytes:
    kind = data.draw(st.sampled_from(["bytes", "delete", "insert", "cell", "truncate", "header",
                                      "lines"]))
    if kind == "bytes":
        return data.draw(st.binary(max_size=300))
    n = len(base)
    if kind == "delete":
        i = data.draw(st.integers(0, n - 1))
        j = data.draw(st.integers(i, min(n, i + 80)))
        return base[:i] + base[j:]
    if kind == "insert":
        i = data.draw(st.integers(0, n))
        return base[:i] + data.draw(st.binary(min_size=1, max_size=20)) + base[i:]
    if kind == "truncate":
        return base[: data.draw(st.integers(0, n))]
    lines = base.decode().split("\n")
    if kind == "cell":
        r = data.draw(st.integers(1, len(lines) - 2))
        fields = lines[r].split(",")
        fields[data.draw(st.integers(0, len(fields) - 1))] = data.draw(CELL_TEXT)
        lines[r] = ",".join(fields)
    elif kind == "header":
        header = json.loads(lines[0][len(traces.HEADER_PREFIX):])
        key = data.draw(st.sampled_from(sorted(header) + ["new"]))
        header[key] = data.draw(st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3),
            max_leaves=6))
        lines[0] = traces.HEADER_PREFIX + json.dumps(header)
    else:  # reorder / duplicate / drop lines
        k = data.draw(st.integers(1, len(lines) - 1))
        op = data.draw(st.sampled_from(["dup", "drop", "swap"]))
        if op == "dup":
            lines.insert(k, lines[k])
        elif op == "drop":
            del lines[k]
        else:
            lines[0], lines[k] = lines[k], lines[0]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.slow
def test_fuzzed_files_load_or_raise_trace_format_error(tiny, tmp_path_factory, data):
    raw = _mutate(tiny, data)
    if data.draw(st.booleans()):
        raw = gzip.compress(raw)
        if data.draw(st.booleans()):
            raw = raw[: data.draw(st.integers(0, len(raw)))]
    path = tmp_path_factory.getbasetemp() / "fuzz.csv.gz"
    path.write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", traces.TraceCutWarning)
        try:
            t = traces.load_trace(path)
        except TraceFormatError as e:
            assert str(path) in str(e)
        else:
            assert isinstance(t, traces.Trace)
            assert np.isfinite(t.co_cpu_pct).all() and (np.nan_to_num(t.latency_ms) >= 0).all()


# ---- bundled traces ---------------------------------------------------------------------------


@pytest.mark.slow
def test_bundled_traces_are_small_documented_and_cover_every_phone():
    names = traces.bundled_traces()
    assert len(names) >= 3
    root = traces.bundled_root()
    assert (root / "README.md").is_file()
    total = sum(len(e.read_bytes()) for e in root.iterdir() if e.is_file())
    assert total < 20 * 2**20
    cells = set()
    for name in names:
        t = traces.load_trace_cached(name)
        kind = t.header.provenance.get("kind")
        assert kind in ("simulated", "measured"), name
        # a measured trace costs minutes of real inference per hundred requests
        assert t.complete and t.n_requests >= (1000 if kind == "simulated" else 100), name
        assert name in (root / "README.md").read_text(), f"{name} is not described in README"
        cells.add((t.header.device, t.header.setting))
    assert {(d, s) for d in device_names() for s in ("static", "dynamic")} <= cells


def test_unknown_trace_names_list_the_bundled_ones():
    with pytest.raises(UnknownNameError) as info:
        traces.load_trace("no-such-trace")
    assert traces.bundled_traces()[0] in str(info.value)


def test_cache_sees_a_rewritten_file(small, tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(small.read_bytes())
    first = traces.load_trace_cached(path)
    assert traces.load_trace_cached(path) is first
    t = traces.load_trace(small)
    smaller = replace(t, latency_ms=np.where(np.arange(12)[:, None] < 5, t.latency_ms, np.nan))
    time.sleep(0.01)
    traces.write_trace(smaller, path, force=True,
                       header=replace(t.header, coverage="partial"))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert traces.load_trace_cached(path).n_requests == 5


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_parquet_files_load_or_raise_trace_format_error(tiny, tmp_path_factory, data):
    pytest.importorskip("pyarrow")
    base_dir = tmp_path_factory.getbasetemp()
    good = base_dir / "tiny.parquet"
    if not good.exists():
        src = base_dir / "tiny-src.csv"
        src.write_bytes(tiny)
        traces.write_trace(traces.load_trace(src), good)
    raw = bytearray(good.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(4, len(raw)))]
    path = base_dir / "fuzz.parquet"
    path.write_bytes(bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", traces.TraceCutWarning)  # "PAR1" damaged: read as CSV
        try:
            traces.load_trace(path)
        except TraceFormatError as e:
            assert str(path) in str(e)
