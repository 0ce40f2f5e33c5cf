"""Bounded reads: bombs, huge declared shapes, deep nesting, devices and FIFOs are refused with
the module's own error naming the file and the limit, in bounded memory and time.

Each hostile file is read in a fresh subprocess that reports its peak RSS
(``VmHWM`` from ``/proc/self/status``), so a read that fills memory before failing is caught, not only one
that raises the wrong error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_RSS_MB = 300


# VmHWM: this process's own peak RSS since its exec. (getrusage's ru_maxrss would be no good
# here: Linux carries it across fork + exec, so a child of a big pytest process inherits its size.)
PEAK_MB = """
def _peak_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""


def read_in_subprocess(code: str, timeout_s: float = 120) -> tuple[str, float]:
    """Run ``code`` (which sets ``result``) in a fresh interpreter; returns (result, peak MB)."""
    script = (PEAK_MB + "result = 'no error'\ntry:\n" +
              "".join(f"    {line}\n" for line in code.strip().splitlines()) +
              "except Exception as e:\n    result = f'{type(e).__name__}: {e}'\n"
              "print(result)\n"
              "print(_peak_mb())\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr[-2000:]
    *lines, rss = done.stdout.strip().splitlines()
    return "\n".join(lines), float(rss)


def gzip_bomb(path: Path, expanded_bytes: int) -> None:
    """A gzip member of ``expanded_bytes`` zero bytes, compressed in 16 MiB steps (small here)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(16 << 20)
    with open(path, "wb") as f:
        f.write(c.compress(b"# autoscale-trace {}\n"))
        for _ in range(expanded_bytes // len(block)):
            f.write(c.compress(block))
        f.write(c.flush())


@pytest.mark.slow
def test_gzip_trace_bomb_is_refused_in_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.csv.gz"
    gzip_bomb(bomb, 1 << 30)  # the case: about 1 MB expanding to 1 GiB
    assert bomb.stat().st_size < 2 << 20
    result, rss_mb = read_in_subprocess(
        f"from autoscale_env.traces.format import load_trace\nload_trace({str(bomb)!r})")
    assert result.startswith("TraceFormatError") and str(bomb) in result
    assert "expands to more than 134217728 bytes" in result, result
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.0f} MB"


def test_oversized_trace_file_is_refused_before_reading(tmp_path, monkeypatch):
    from autoscale_env.traces import format as traces
    from autoscale_env.world.errors import TraceFormatError
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * 2048)
    monkeypatch.setattr(traces, "MAX_TRACE_BYTES", 1024)
    with pytest.raises(TraceFormatError, match=r"2048 bytes exceeds the limit of 1024"):
        traces.load_trace(big)


def test_parquet_declaring_more_than_the_limit_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    from autoscale_env.traces import format as traces
    from autoscale_env.world.errors import TraceFormatError
    trace = traces.load_trace(next(t for t in traces.bundled_traces() if t.startswith("sim-")))
    path = traces.write_trace(trace, tmp_path / "t.parquet")
    import pyarrow.parquet as pq
    meta = pq.ParquetFile(path).metadata
    declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    assert declared > path.stat().st_size  # compressed: the file is smaller than its data
    monkeypatch.setattr(traces, "MAX_TRACE_BYTES", declared - 1)  # file fits, data does not
    with pytest.raises(TraceFormatError, match="declares .* uncompressed bytes, over the limit"):
        traces.load_trace(path)


# ---- model files ---------------------------------------------------------------------------


def npy_header(shape, dtype="<f4") -> bytes:
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_model_with_a_huge_declared_shape_is_refused_before_allocating(tmp_path):
    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("q.npy", npy_header((1 << 20, 1 << 20)) + b"\0" * 64)
        z.writestr("meta.npy", npy_header((), "<U2") + "{}".encode("utf-32-le"))
    result, rss_mb = read_in_subprocess(
        f"from agents.qlearning import read_model_file\nread_model_file({str(path)!r})")
    assert result.startswith("ModelFileError") and str(path) in result
    assert "needs 4398046511104 bytes, the member holds" in result, result
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.0f} MB"


@pytest.mark.slow
def test_model_deflate_bomb_is_refused_from_its_declared_size(tmp_path):
    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z, \
            z.open("q.npy", "w", force_zip64=True) as f:
        f.write(npy_header((1 << 28,)))
        block = bytes(16 << 20)
        for _ in range(64):  # 1 GiB of zeros, about 1 MB compressed
            f.write(block)
    assert path.stat().st_size < 4 << 20
    result, rss_mb = read_in_subprocess(
        f"from agents.qlearning import read_model_file\nread_model_file({str(path)!r})")
    assert result.startswith("ModelFileError") and str(path) in result
    assert "uncompressed bytes, over the limit of 67108864" in result, result
    assert rss_mb < MAX_RSS_MB, f"peak RSS {rss_mb:.0f} MB"


def test_model_metadata_nested_too_deeply_is_refused(tmp_path):
    from agents.qlearning import read_model_file
    from autoscale_env.world.errors import ModelFileError
    path = tmp_path / "model.npz"
    np.savez(path, q=np.zeros((4, 2), np.float32), meta=np.array("[" * 100_000 + "]" * 100_000))
    with pytest.raises(ModelFileError, match=r"nested 100000 levels deep, over the limit of 32"):
        read_model_file(str(path))


def test_checkpoint_with_a_huge_declared_shape_is_refused(tmp_path):
    import gymnasium as gym

    from agents.qlearning import QLearningAgent
    from agents.experiments.train import restore_checkpoint
    from autoscale_env.world.errors import ModelFileError
    path = tmp_path / "ckpt-000000000100.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("q.npy", npy_header((1 << 30, 1 << 10)) + b"\0" * 64)
        z.writestr("state.npy", npy_header((), "<U2") + "{}".encode("utf-32-le"))
    env = gym.make("AutoScale-v0")
    with pytest.raises(ModelFileError, match=str(path)):
        restore_checkpoint(QLearningAgent(env), env, path)


# ---- profiles and feature files --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["device", "features"])
def test_dev_zero_as_a_profile_or_features_file_is_refused_at_once(kind):
    result, rss_mb = read_in_subprocess(
        "import gymnasium as gym, autoscale_env\n"
        f"gym.make('AutoScale-v0', {kind}='/dev/zero')", timeout_s=60)
    assert result.startswith(("ConfigError", "UnknownNameError")), result
    assert "/dev/zero" in result and "not a regular file" in result, result
    assert rss_mb < MAX_RSS_MB


@pytest.mark.parametrize("kind", ["device", "features"])
def test_fifo_as_a_profile_or_features_file_is_refused_without_blocking(tmp_path, kind):
    fifo = tmp_path / "profile.toml"
    os.mkfifo(fifo)
    result, _ = read_in_subprocess(  # a blocking open() would hit the subprocess timeout
        "import gymnasium as gym, autoscale_env\n"
        f"gym.make('AutoScale-v0', {kind}={str(fifo)!r})", timeout_s=60)
    assert result.startswith("ConfigError") and "not a regular file" in result, result


def test_deeply_nested_toml_is_refused_naming_the_limit(tmp_path):
    from autoscale_env.world import config
    from autoscale_env.world.errors import ConfigError
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=rf"{path}: nested 5000 levels deep, over the limit"):
        config.load_features(str(path))


def test_oversized_toml_is_refused_before_reading(tmp_path):
    from autoscale_env.world import config
    from autoscale_env.world.errors import ConfigError
    path = tmp_path / "huge.toml"
    with open(path, "wb") as f:
        f.truncate(config.MAX_TOML_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ConfigError, match=rf"{path}: {config.MAX_TOML_BYTES + 1} bytes exceeds"):
        config.load_device(str(path))


@pytest.mark.slow
def test_the_trace_limit_can_be_raised_for_a_long_recording(tmp_path, monkeypatch):
    from autoscale_env.traces import format as traces
    from autoscale_env.world.errors import TraceFormatError
    trace = traces.load_trace(next(t for t in traces.bundled_traces() if t.startswith("sim-")))
    path = traces.write_trace(trace, tmp_path / "t.csv.gz")
    monkeypatch.setattr(traces, "MAX_TRACE_BYTES", 1 << 20)  # the trace expands to 2.7 MB
    with pytest.raises(TraceFormatError, match="set AUTOSCALE_MAX_TRACE_MB"):
        traces.load_trace(path)
    monkeypatch.setenv("AUTOSCALE_MAX_TRACE_MB", "8")
    assert traces.load_trace(path).n_requests == trace.n_requests
