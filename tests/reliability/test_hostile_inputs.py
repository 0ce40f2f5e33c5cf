"""Hostile inputs the rest of the suite does not already try.

Every refusal must raise the package's error type *and* name what is at fault (file, field,
value). What is covered elsewhere is not repeated here:

* model files: junk bytes, a cut file, a missing file, another device ->
  ``tests/agents/test_qlearning.py``; SB3 for another device -> ``tests/agents/test_sb3.py``;
* device profiles: negative/NaN/string power, missing and unknown fields ->
  ``tests/test_config.py``;
* traces: missing column, negative latency, accuracy outside [0, 1], unknown target,
  duplicate (request, target), fuzzing -> ``tests/test_traces.py``;
* actions: out-of-range and non-integer actions -> ``tests/test_env_api.py``,
  ``tests/test_vector.py``;
* live server: garbage (bad magic), a 64 MiB header, a stalled sender, disconnects
  mid-request, bad content in well-framed requests -> ``tests/backends/live/test_live_server.py``.

Writing this file found five package bugs (metadata trusted by ``QLearningAgent.load``, non-UTF-8
or directory TOML paths, unchecked ``edge``/``cloud`` fields, duplicate feature names, ``step``
before ``reset`` on the unwrapped env); their tests here now pass.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import struct
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import autoscale_env  # noqa: F401  (registers AutoScale-v0)
from agents.qlearning import QLearningAgent
from autoscale_env.world import config
from autoscale_env.backends.sim import SimBackend
from autoscale_env.world.errors import (
    ConfigError,
    InvalidActionError,
    ModelFileError,
    TraceFormatError,
    UnknownNameError,
)
from autoscale_env.traces.recorder import record

# =============================================================================================
# Model files (QLearningAgent.load): tables and metadata that do not fit
# =============================================================================================


def qenv(**kw):
    return gym.make("AutoScale-v0", **{"scenario": "translation", "setting": "static", **kw})


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[np.ndarray, dict]:
    """The arrays of a genuine model file: (q, metadata)."""
    path = tmp_path_factory.mktemp("model") / "good.npz"
    QLearningAgent(qenv(), seed=0).learn(300).save(path)
    with np.load(path, allow_pickle=False) as d:
        return np.array(d["q"]), json.loads(str(d["meta"]))


def write_model(path: Path, q=None, meta=None, **arrays) -> Path:
    """An .npz shaped like a saved model; ``meta`` may be a dict or raw text."""
    if q is not None:
        arrays["q"] = q
    if meta is not None:
        arrays["meta"] = np.array(meta if isinstance(meta, str) else json.dumps(meta))
    np.savez(path, **arrays)
    return path


TABLE_CASES = {
    # name: (q from the genuine q, what the message must say)
    "one target too few": (lambda q: q[:, :-1], "shape (1024, 8), expected (1024, 9)"),
    "half the states": (lambda q: q[:512], "shape (512, 9), expected (1024, 9)"),
    "flattened": (lambda q: q.reshape(-1), "2-D"),
    "NaN entry": (lambda q: np.where(np.arange(q.size).reshape(q.shape) == 7, np.nan, q),
                  "finite"),
    "inf entry": (lambda q: np.full_like(q, -np.inf), "finite"),
    "integer table": (lambda q: q.astype(np.int32), "int32"),
}


@pytest.mark.parametrize("case", list(TABLE_CASES))
def test_model_file_with_a_table_that_does_not_fit_is_refused(saved, tmp_path, case):
    edit, says = TABLE_CASES[case]
    q, meta = saved
    path = write_model(tmp_path / "m.npz", edit(q), meta)
    with pytest.raises(ModelFileError) as info:
        QLearningAgent.load(path, env=qenv())
    assert str(path) in str(info.value) and says in str(info.value), str(info.value)


META_CASES = {
    # name: (arrays of the file, given the genuine (q, meta); what the message must say)
    "no q array": (lambda q, m: {"meta": np.array(json.dumps(m))}, "'q' and 'meta'"),
    "no meta array": (lambda q, m: {"q": q}, "'q' and 'meta'"),
    "meta is not JSON": (lambda q, m: {"q": q, "meta": np.array("{targets: [")}, "JSONDecodeError"),
    "meta is a JSON list": (lambda q, m: {"q": q, "meta": np.array("[1, 2]")}, "format"),
    "other format": (lambda q, m: {"q": q, "meta": np.array(json.dumps({**m, "format": "x/2"}))},
                     "format"),
    "pickled object array": (lambda q, m: {"q": np.array([{"x": 1}], dtype=object),
                                           "meta": np.array(json.dumps(m))}, "pickle"),
    "other observation bins": (lambda q, m: {"q": q, "meta": np.array(json.dumps(
        {**m, "nvec": [4, 2, 2, 4, 4, 2, 3]}))}, "nvec="),
    "targets missing": (lambda q, m: {"q": q, "meta": np.array(json.dumps(
        {k: v for k, v in m.items() if k != "targets"}))}, "targets=None"),
}


@pytest.mark.parametrize("case", list(META_CASES))
def test_model_file_with_bad_arrays_or_metadata_is_refused(saved, tmp_path, case):
    make, says = META_CASES[case]
    path = tmp_path / "m.npz"
    np.savez(path, **make(*saved))
    with pytest.raises(ModelFileError) as info:
        QLearningAgent.load(path, env=qenv())
    assert str(path) in str(info.value) and says in str(info.value), str(info.value)


def test_model_trained_with_other_feature_bins_is_refused(tmp_path):
    # Same number of bins (so the table has the same shape), other edges: a silent mismatch
    # unless the loader compares the features themselves.
    text = (config.DATA_DIR / "features.toml").read_text().replace("edges = [10]", "edges = [12]")
    features = tmp_path / "features.toml"
    features.write_text(text)
    path = tmp_path / "m.npz"
    QLearningAgent(qenv(features=str(features)), seed=0).learn(200).save(path)
    with pytest.raises(ModelFileError) as info:
        QLearningAgent.load(path, env=qenv())
    assert str(path) in str(info.value) and "features=" in str(info.value)


def test_a_directory_named_like_a_model_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    path.mkdir()
    with pytest.raises(ModelFileError, match=re.escape(str(path))):
        QLearningAgent.load(path, env=qenv())


TAMPERED_META = {
    # name: (metadata edit, the field the message should name)
    "hyperparameters not a table": (lambda m: {**m, "hyperparameters": [0.9, 0.1]},
                                    "hyperparameters"),
    "unknown hyperparameter": (lambda m: {**m, "hyperparameters": {"alpah": 0.5}}, "alpah"),
    "non-numeric alpha": (lambda m: {**m, "hyperparameters": {"alpha": "hot"}}, "alpha"),
    "negative alpha": (lambda m: {**m, "hyperparameters": {"alpha": -5.0}}, "alpha"),
    "non-numeric seed": (lambda m: {**m, "seed": "abc"}, "seed"),
    "null seed": (lambda m: {**m, "seed": None}, "seed"),
    "non-numeric epsilon": (lambda m: {**m, "epsilon": "x"}, "epsilon"),
    "NaN epsilon": (lambda m: {**m, "epsilon": float("nan")}, "epsilon"),
    "non-numeric num_timesteps": (lambda m: {**m, "num_timesteps": "many"}, "num_timesteps"),
}


@pytest.mark.parametrize("case", list(TAMPERED_META))
def test_model_file_with_tampered_metadata_is_refused_naming_the_field(saved, tmp_path, case):
    edit, field = TAMPERED_META[case]
    q, meta = saved
    path = write_model(tmp_path / "m.npz", q, edit(meta))
    with pytest.raises(ModelFileError) as info:
        QLearningAgent.load(path, env=qenv())
    assert str(path) in str(info.value) and field in str(info.value), str(info.value)


@pytest.fixture(scope="module")
def ppo_file(tmp_path_factory):
    pytest.importorskip("stable_baselines3")
    from agents import make_agent

    path = tmp_path_factory.mktemp("ppo") / "ppo.zip"
    make_agent("ppo", gym.make("AutoScale-v0"), seed=0, n_steps=64).save(str(path))
    return path


@pytest.mark.parametrize("edit, field", [
    (lambda m: {**m, "hyperparameters": {"n_stepz": 3}}, "hyperparameters"),
    (lambda m: {**m, "hyperparameters": [1, 2]}, "hyperparameters"),
    (lambda m: {**m, "seed": "abc"}, "seed"),
])
def test_sb3_model_description_with_bad_fields_is_refused(ppo_file, tmp_path, edit, field):
    from agents.sb3 import PPOAgent

    path = tmp_path / "ppo.zip"
    path.write_bytes(ppo_file.read_bytes())
    meta = json.loads(Path(str(ppo_file) + ".meta.json").read_text())
    Path(str(path) + ".meta.json").write_text(json.dumps(edit(meta)))
    with pytest.raises(ModelFileError) as info:
        PPOAgent.load(str(path), env=gym.make("AutoScale-v0"))
    assert str(path) in str(info.value) and field in str(info.value), str(info.value)


@pytest.mark.parametrize("damage", ["junk", "truncated", "no description"])
def test_damaged_sb3_model_file_is_refused(ppo_file, tmp_path, damage):
    from agents.sb3 import PPOAgent

    path = tmp_path / "ppo.zip"
    data = ppo_file.read_bytes()
    path.write_bytes({"junk": b"junk" * 500, "truncated": data[: len(data) // 2],
                      "no description": data}[damage])
    if damage != "no description":
        Path(str(path) + ".meta.json").write_bytes(Path(str(ppo_file) + ".meta.json").read_bytes())
    with pytest.raises(ModelFileError) as info:
        PPOAgent.load(str(path), env=gym.make("AutoScale-v0"))
    assert str(path) in str(info.value)


# =============================================================================================
# TOML files a user supplies: device profiles (beyond tests/test_config.py) and features files
# =============================================================================================

MI8PRO = (config.DEVICES_DIR / "mi8pro.toml").read_text()
FEATURES = (config.DATA_DIR / "features.toml").read_text()


def sub(pattern: str, repl: str):
    """An edit replacing the first match of a regex (anchored to real lines, not comments)."""
    return lambda s: re.sub(pattern, repl, s, count=1, flags=re.M)


PROFILE_CASES = {
    # name: (edit, field named, value or problem named)
    "negative latency": (sub(r'^"gpu/fp16" = 6\.45$', '"gpu/fp16" = -6.45'),
                         "latency_ms.mnv1.gpu/fp16", "-6.45"),
    "zero latency": (sub(r'^"gpu/fp16" = 6\.45$', '"gpu/fp16" = 0'),
                     "latency_ms.mnv1.gpu/fp16", ">= 0.001 and <= 3600000 ms"),
    "NaN latency": (sub(r'^"gpu/fp16" = 6\.45$', '"gpu/fp16" = nan'),
                    "latency_ms.mnv1.gpu/fp16", "finite"),
    "latency as a string": (sub(r'^"gpu/fp16" = 6\.45$', '"gpu/fp16" = "6.45 ms"'),
                            "latency_ms.mnv1.gpu/fp16", "number"),
    "negative idle power": (sub(r"^idle_power_w = 0\.038$", "idle_power_w = -0.038"),
                            "processors.cpu.idle_power_w", "-0.038"),
    "infinite base power": (sub(r"^power_w = 0\.5$", "power_w = inf"), "base.power_w", "inf"),
    "zero base power": (sub(r"^power_w = 0\.5$", "power_w = 0"), "base.power_w", ">= 0.001 and <= 100 W"),
    "negative interference": (sub(r"^cpu_interference = 1\.5$", "cpu_interference = -1.5"),
                              "processors.cpu.cpu_interference", "-1.5"),
    "power as a boolean": (sub(r"^busy_power_w = 3\.5$", "busy_power_w = true"),
                           "processors.cpu.busy_power_w", "True"),
    "speed-up fallback": (sub(r"^fallback_slowdown = 1\.10$", "fallback_slowdown = 0.5"),
                          "fallback_slowdown", "0.5"),
    "targets as a string": (sub(r"^targets = \[[^\]]*\]", 'targets = "local/cpu/fp32"'),
                            "targets", "local/cpu/fp32"),
    "target listed twice": (sub(r"^targets = \[", 'targets = ["local/cpu/fp32", '),
                            "targets", "twice"),
    "table given as a value": (lambda s: s.replace("[base]\n", "base = 1\n[base_]\n", 1),
                               "base", "table"),
    "unknown network row": (lambda s: s.replace("[latency_ms.mnv1]", "[latency_ms.alexnet]", 1),
                            "latency_ms.alexnet", "catalog network"),
    "unknown top-level key": (lambda s: s.replace('soc = "', 'socket = "x"\nsoc = "', 1),
                              "socket", "not a known field"),
    "empty file": (lambda s: "", "kind", "missing"),
}


def write_profile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "phone.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", list(PROFILE_CASES))
def test_malformed_profile_through_gym_make_names_file_field_and_value(tmp_path, case):
    edit, field, value = PROFILE_CASES[case]
    text = edit(MI8PRO)
    assert text != MI8PRO
    path = write_profile(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        gym.make("AutoScale-v0", device=path)
    message = str(info.value)
    assert path in message and f"'{field}'" in message and value in message, message


@pytest.mark.parametrize("kind", ["device", "features"])
def test_garbage_toml_file_is_not_valid_toml(tmp_path, kind):
    path = tmp_path / "x.toml"
    path.write_bytes(b"\x00\x01 garbage = = \x7f")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*not valid TOML"):
        gym.make("AutoScale-v0", **{kind: str(path)})


@pytest.mark.parametrize("what", ["not UTF-8", "a directory"])
@pytest.mark.parametrize("kind", ["device", "features"])
def test_unreadable_toml_file_raises_config_error_naming_it(tmp_path, kind, what):
    path = tmp_path / "x.toml"
    if what == "a directory":
        path.mkdir()
    else:
        path.write_bytes(b"name = \"\xff\xfe\"\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        gym.make("AutoScale-v0", **{kind: str(path)})


def test_profile_path_that_does_not_exist_is_named(tmp_path):
    path = str(tmp_path / "nowhere.toml")
    with pytest.raises(ConfigError, match=re.escape(path) + ".*not found"):
        gym.make("AutoScale-v0", device=path)


@pytest.mark.parametrize("edge", ["nokia", "galaxy_s10e"])
def test_profile_naming_a_bad_edge_device_is_refused(tmp_path, edge):
    path = write_profile(tmp_path, sub(r'^edge = "galaxy_tab_s6"$', f'edge = "{edge}"')(MI8PRO))
    with pytest.raises(ConfigError) as info:
        gym.make("AutoScale-v0", device=path)
    assert path in str(info.value) and "'edge'" in str(info.value), str(info.value)


FEATURE_CASES = {
    # name: (edit, field named, value or problem named)
    "missing field": (sub(r'^field = "conv"\n', ""), "feature[0].field", "missing"),
    "edges as a string": (sub(r"^edges = \[10\]$", 'edges = "10"'), "feature[1].edges", "'10'"),
    "NaN edge": (sub(r"^edges = \[10\]$", "edges = [nan]"), "feature[1].edges", "nan"),
    "edges out of order": (sub(r"^edges = \[1, 30, 60\]$", "edges = [30, 1, 60]"),
                           "feature[0].edges", "[30.0, 1.0, 60.0]"),
    "repeated edge": (sub(r"^edges = \[1, 30, 60\]$", "edges = [1, 30, 30]"),
                      "feature[0].edges", "strictly increasing"),
    "unknown key": (sub(r'^name = "fc"$', 'name = "fc"\nbins = 3'), "feature[1].bins",
                    "not a known field"),
    "labels do not match edges": (sub(r'^labels = \["<10", ">=10"\]$', 'labels = ["<10"]'),
                                  "feature[1].labels", "got 1"),
    "unknown raw field": (sub(r'^field = "fc"$', 'field = "gpu_temp"'), "feature[1].field",
                          "gpu_temp"),
    "descending not a boolean": (sub(r"^descending = true$", 'descending = "yes"'),
                                 "feature[5].descending", "'yes'"),
    "no features": (lambda s: "# nothing\n", "feature", "missing"),
    "feature not a table": (lambda s: "feature = [1, 2]\n", "feature[0]", "table"),
}


@pytest.mark.parametrize("case", list(FEATURE_CASES))
def test_malformed_features_file_names_file_field_and_value(tmp_path, case):
    edit, field, value = FEATURE_CASES[case]
    text = edit(FEATURES)
    assert text != FEATURES
    path = tmp_path / "features.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        gym.make("AutoScale-v0", features=str(path))
    message = str(info.value)
    assert str(path) in message and f"'{field}'" in message and value in message, message


def test_features_file_with_a_duplicate_name_is_refused(tmp_path):
    path = tmp_path / "features.toml"
    path.write_text(sub(r'^name = "fc"$', 'name = "conv"')(FEATURES))
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*conv"):
        gym.make("AutoScale-v0", features=str(path))


# =============================================================================================
# Traces and replay options (beyond tests/test_traces.py and tests/backends/test_replay.py)
# =============================================================================================


@pytest.fixture(scope="module")
def trace_lines(tmp_path_factory) -> list[str]:
    """A 12-request static recording (rows 1-9: request 0), as text lines."""
    out = tmp_path_factory.mktemp("trace") / "small.csv"
    record(SimBackend("mi8pro", "non_streaming", "static"), 12, out, seed=3, progress=False)
    return out.read_text().split("\n")[:-1]


def set_cell(lines: list[str], row: int, column: str, value: str) -> list[str]:
    out = list(lines)
    k = lines[1].split(",").index(column)
    fields = out[1 + row].split(",")
    fields[k] = value
    out[1 + row] = ",".join(fields)
    return out


TRACE_CASES = {
    # name: (edit, column named, data row named)
    "row repeated verbatim": (lambda ls: ls[:5] + [ls[4]] + ls[5:], "target", 4),
    "negative request id": (lambda ls: set_cell(ls, 1, "request", "-1"), "request", 1),
    "NaN timestamp": (lambda ls: set_cell(ls, 2, "timestamp_s", "nan"), "timestamp_s", 2),
    "memory above 100 %": (lambda ls: set_cell(ls, 1, "co_mem_pct", "100.5"), "co_mem_pct", 1),
    "p2p signal below -150 dBm": (lambda ls: set_cell(ls, 1, "rssi_p2p_dbm", "-151"),
                                  "rssi_p2p_dbm", 1),
    "accuracy NaN": (lambda ls: set_cell(ls, 3, "accuracy", "nan"), "accuracy", 3),
}


@pytest.mark.parametrize("case", list(TRACE_CASES))
def test_malformed_trace_through_gym_make_names_file_row_and_column(trace_lines, tmp_path, case):
    edit, column, row = TRACE_CASES[case]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(edit(trace_lines)) + "\n")
    with pytest.raises(TraceFormatError) as info:
        gym.make("AutoScale-v0", backend="replay", trace=str(path))
    message = str(info.value)
    assert str(path) in message and f"'{column}'" in message and f"row {row} " in message, message
    assert (info.value.column, info.value.row) == (column, row)


def test_trace_path_that_does_not_exist_is_named(tmp_path):
    path = str(tmp_path / "gone.csv.gz")
    with pytest.raises(UnknownNameError, match=re.escape(repr(path))):
        gym.make("AutoScale-v0", backend="replay", trace=path)


def test_trace_with_no_requests_is_refused_naming_the_file(trace_lines, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("\n".join(trace_lines[:2]) + "\n")  # header and column names only
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*no complete request"):
        gym.make("AutoScale-v0", backend="replay", trace=str(path))


@pytest.mark.parametrize("options, error, says", [
    ({"order": "reverse"}, UnknownNameError, "order 'reverse'"),
    ({"block_size": 0}, ConfigError, "block_size must be >= 1, got 0"),
    ({"reference_energy_mj": {"mnv1": -1}}, ConfigError, "reference_energy_mj['mnv1']"),
    ({"reference_energy_mj": {"mnv1": float("nan")}}, ConfigError, "reference_energy_mj['mnv1']"),
    ({"reference_energy_mj": {"alexnet": 10.0}}, UnknownNameError, "network 'alexnet'"),
    # Python's own refusal of an unknown keyword (gymnasium re-raises it naming the kwargs).
    ({"speed": 2}, TypeError, "unexpected keyword argument 'speed'"),
])
def test_bad_replay_options_are_refused_naming_the_option(options, error, says):
    with pytest.raises(error) as info:
        gym.make("AutoScale-v0", backend="replay", trace="sim-mi8pro-non_streaming-static",
                 backend_options=options)
    assert says in str(info.value), str(info.value)


# =============================================================================================
# Out-of-range actions: the message names the value, and a refused action changes nothing
# =============================================================================================


@pytest.mark.parametrize("bad, named", [
    (9, "action 9"), (-1, "action -1"), (np.int64(9), "action 9"), (np.uint8(200), "action 200"),
    (np.int8(-1), "action -1"), (2**70, f"action {2**70}"), (np.float64(1.0), "1.0"),
    (float("nan"), "nan"), (b"1", "b'1'"), (1 + 0j, "(1+0j)"),
])
@pytest.mark.parametrize("backend", ["sim", "replay"])
def test_refused_action_names_the_value_and_leaves_the_env_untouched(bad, named, backend):
    kw = {"trace": "sim-mi8pro-non_streaming-static"} if backend == "replay" else {}

    def run(hostile: bool) -> list:
        env = gym.make("AutoScale-v0", backend=backend, **kw)
        obs, _ = env.reset(seed=4)
        out = [obs.tobytes()]
        for a in range(12):
            if hostile:
                with pytest.raises(InvalidActionError) as info:
                    env.step(bad)
                assert named in str(info.value) and "0..8" in str(info.value), str(info.value)
            obs, r, term, trunc, info = env.step(a % 9)
            out.append((obs.tobytes(), r, trunc, repr(sorted(info.items()))))
        return out

    assert run(hostile=True) == run(hostile=False)


def test_unwrapped_step_before_reset_says_to_reset():
    env = gym.make("AutoScale-v0").unwrapped
    with pytest.raises((RuntimeError, gym.error.ResetNeeded), match="reset"):
        env.step(0)


# =============================================================================================
# Live server: clients the live tests do not play (in-process server, stub engine, no models)
# =============================================================================================


@pytest.fixture(scope="module")
def live():
    """The live modules (skips without torch) and a stub engine class."""
    torch = pytest.importorskip("torch")
    from autoscale_env.backends.live import client, server, wire
    from autoscale_env.backends.live.executor import InferenceEngine, Placement, RunResult

    class StubEngine(InferenceEngine):
        """Echoes its input; model 'boom' raises inside inference."""

        def run(self, name, unit, x):
            if name == "boom":
                raise RuntimeError("kaboom in the forward pass")
            return RunResult(torch.as_tensor(np.asarray(x)), 1.0, Placement("cpu", "fp32", False))

    return {"client": client, "server": server, "wire": wire, "engine": StubEngine}


@contextlib.contextmanager
def serving(live, **options):
    srv = live["server"].InferenceServer(("127.0.0.1", 0), "edge", live["engine"](), **options)
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    loop.start()
    try:
        yield srv
    finally:
        srv.stop(grace_s=2)
        loop.join(5)
        assert not loop.is_alive()


def connect(srv, timeout_s: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout_s)
    sock.settimeout(timeout_s)
    return sock


def answer(live, sock: socket.socket):
    data = live["wire"].read_message(sock, timeout_s=5)
    assert data is not None, "closed without an answer"
    return live["wire"].decode_response(data)


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def good(live, srv) -> bool:
    x = np.arange(6, dtype=np.float32)
    with live["client"].RemoteClient(("127.0.0.1", srv.port), timeout_s=5) as c:
        return bool((c.infer("m", x).output == x).all())


def request_fields(live, model="m", array=None) -> list:
    """The header fields of a valid request, as a list to edit, and its payload."""
    wire = live["wire"]
    msg = wire.encode_request(model, np.zeros(4, np.float32) if array is None else array)
    return list(wire._REQUEST.unpack_from(msg)), msg[wire._REQUEST.size:]


def framed(live, edit) -> bytes:
    """A well-framed request whose header fields were edited by ``edit(fields)``."""
    wire = live["wire"]
    fields, payload = request_fields(live)
    edit(fields)
    return wire._REQUEST.pack(*fields) + payload


# fields: 0 magic, 1 version, 2 type, 3 id, 4 model, 5 unit, 6 dtype, 7 ndim, 8-13 shape, 14 len
FRAMED_CASES = {
    "shape needs more bytes than sent": (lambda f: f.__setitem__(8, 5), "needs 20 bytes"),
    "unknown dtype code": (lambda f: f.__setitem__(6, 99), "dtype code 99"),
    "seven dimensions": (lambda f: f.__setitem__(7, 7), "ndim 7"),
    "shape beyond ndim": (lambda f: f.__setitem__(9, 3), "beyond ndim"),
    "non-ascii model name": (lambda f: f.__setitem__(4, b"\xff\xfe"), "model name"),
    "unit not processor/precision": (lambda f: f.__setitem__(5, b"GPU!"), "unit"),
}


@pytest.mark.live
@pytest.mark.parametrize("case", list(FRAMED_CASES))
def test_well_framed_malformed_request_is_answered_and_the_connection_kept(live, case):
    edit, says = FRAMED_CASES[case]
    with serving(live, read_timeout_s=2) as srv:
        sock = connect(srv)
        sock.sendall(framed(live, edit))
        resp = answer(live, sock)
        assert resp.status == live["wire"].Status.BAD_REQUEST and says in resp.error, resp.error
        x = np.arange(3, dtype=np.float32)  # the same connection still serves
        sock.sendall(live["wire"].encode_request("m", x, request_id=7))
        resp = answer(live, sock)
        assert resp.ok and resp.request_id == 7 and (resp.array == x).all()
        sock.close()


@pytest.mark.live
def test_a_response_sent_to_the_server_is_answered_bad_request(live):
    with serving(live) as srv:
        sock = connect(srv)
        sock.sendall(live["wire"].encode_response(live["wire"].Status.OK, np.zeros(2)))
        resp = answer(live, sock)
        assert resp.status == live["wire"].Status.BAD_REQUEST and "expected a request" in resp.error
        sock.close()
        assert good(live, srv)


@pytest.mark.live
@pytest.mark.parametrize("case", ["wire version 2", "message type 9", "u64-max payload"])
def test_bad_prefix_or_absurd_size_is_refused_and_the_connection_dropped(live, case):
    wire = live["wire"]
    with serving(live, max_bytes=1 << 20) as srv:
        sock = connect(srv)
        if case == "u64-max payload":
            sock.sendall(framed(live, lambda f: f.__setitem__(14, 2**64 - 1)))
            status, says = wire.Status.TOO_LARGE, "exceeds the limit of 1048576 bytes"
        else:
            msg = framed(live, lambda f: f.__setitem__(*((1, 2) if "version" in case else (2, 9))))
            sock.sendall(msg)
            status, says = wire.Status.BAD_REQUEST, ("version 2" if "version" in case
                                                     else "message type 9")
        resp = answer(live, sock)
        assert resp.status == status and says in resp.error, resp.error
        assert closed(sock)
        sock.close()
        assert good(live, srv)


@pytest.mark.live
def test_inference_exception_becomes_internal_and_the_connection_is_kept(live):
    wire = live["wire"]
    with serving(live) as srv:
        sock = connect(srv)
        sock.sendall(wire.encode_request("boom", np.zeros(2, np.float32), request_id=3))
        resp = answer(live, sock)
        assert resp.status == wire.Status.INTERNAL and resp.request_id == 3
        assert "RuntimeError: kaboom" in resp.error
        sock.sendall(wire.encode_request("m", np.ones(2, np.float32)))
        assert answer(live, sock).ok
        sock.close()


@pytest.mark.live
def test_trickling_client_is_cut_off_at_the_read_timeout_while_others_are_served(live):
    """One byte every 50 ms: each arrives in time, the whole message does not (0.5 s)."""
    wire = live["wire"]
    message = wire.encode_request("m", np.zeros(64, np.float32))
    with serving(live, read_timeout_s=0.5) as srv:
        sock = connect(srv)
        result = {}

        def trickle():
            t0 = time.monotonic()
            sent = 0
            try:
                while sent < len(message) and time.monotonic() - t0 < 5:
                    if select.select([sock], [], [], 0.05)[0]:  # the server spoke: stop sending
                        break
                    sock.send(message[sent:sent + 1])
                    sent += 1
                result["resp"] = answer(live, sock)
            except OSError as e:  # dropped without an answer: also acceptable
                result["error"] = e
            result["sent"], result["seconds"] = sent, time.monotonic() - t0

        t = threading.Thread(target=trickle)
        t.start()
        time.sleep(0.15)
        assert good(live, srv)  # served while the trickler holds its connection
        t.join(10)
        assert result["sent"] < len(message), "the whole message got through"
        assert 0.4 < result["seconds"] < 2.0, result
        if "resp" in result:
            assert result["resp"].status == wire.Status.TIMEOUT and "read timeout" in \
                result["resp"].error
        sock.close()
        assert good(live, srv)


@pytest.mark.live
def test_idle_connection_is_closed_silently_and_frees_its_slot(live):
    with serving(live, max_connections=1, idle_timeout_s=0.8, first_byte_timeout_s=0.8) as srv:
        idle = connect(srv)
        t0 = time.monotonic()
        assert idle.recv(1) == b""  # closed without a word
        assert time.monotonic() - t0 < 2.5
        idle.close()
        time.sleep(0.05)
        assert good(live, srv)


@pytest.mark.live
def test_stalled_clients_holding_every_slot_are_shed_then_others_are_served(live):
    wire = live["wire"]
    with serving(live, max_connections=3, read_timeout_s=1.0, idle_timeout_s=30) as srv:
        stalled = [connect(srv) for _ in range(3)]
        for sock in stalled:
            sock.sendall(wire.encode_request("m", np.zeros(8, np.float32))[:20])
        time.sleep(0.05)
        extra = connect(srv)
        assert answer(live, extra).status == wire.Status.BUSY
        extra.close()
        for sock in stalled:
            assert answer(live, sock).status == wire.Status.TIMEOUT
            assert closed(sock)
            sock.close()
        time.sleep(0.05)
        assert good(live, srv)


@pytest.mark.live
def test_a_flood_of_bad_connections_leaks_no_connection_slot(live):
    wire = live["wire"]
    with serving(live, max_connections=4, read_timeout_s=1) as srv:
        for k in range(16):  # four of each kind
            sock = connect(srv)
            if k % 4 == 0:
                sock.sendall(b"\x16\x03\x01\x02\x00" + bytes(range(64)))  # a TLS hello
            elif k % 4 == 1:  # half a request, then a reset (RST, not FIN)
                sock.sendall(wire.encode_request("m", np.zeros(32, np.float32))[:50])
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif k % 4 == 2:
                sock.sendall(framed(live, lambda f: f.__setitem__(6, 0)))
            sock.close()  # k % 4 == 3: connect and leave at once
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # every handler has let go of its slot
            with srv._conns_lock:
                if not srv._conns:
                    break
            time.sleep(0.02)
        # All four slots are free again: four clients at once are all served, none told BUSY.
        clients = [live["client"].RemoteClient(("127.0.0.1", srv.port), timeout_s=5)
                   for _ in range(4)]
        x = np.arange(5, dtype=np.float32)
        assert all((c.infer("m", x).output == x).all() for c in clients)
        for c in clients:
            c.close()
