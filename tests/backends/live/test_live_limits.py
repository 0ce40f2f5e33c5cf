"""Server limits no local client can defeat: idle connections, silent connects, one greedy peer,
slow model loads, models outside the allow-list, a shared token, IPv6 loopback.

All on loopback, bounded: a handful of sockets, waits of a few seconds at most.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from autoscale_env.backends.live import wire  # noqa: E402
from autoscale_env.backends.live.client import RemoteClient, RemoteError, ServerError  # noqa: E402
from autoscale_env.backends.live.executor import (  # noqa: E402
    InferenceEngine,
    Placement,
    RunResult,
)
from autoscale_env.backends.live.server import (  # noqa: E402
    TOKEN_ENV,
    InferenceServer,
    ServerProcess,
)
from autoscale_env.backends.live.wire import Status  # noqa: E402

from live_support import one_torch_thread  # noqa: E402,F401  (autouse fixture)

pytestmark = pytest.mark.live
X = np.arange(6, dtype=np.float32)


class EchoEngine(InferenceEngine):
    """Echoes its input (no model needed)."""

    def run(self, name, unit, x):
        return RunResult(torch.as_tensor(np.asarray(x)), 1.0, Placement("cpu", "fp32", False))


@contextlib.contextmanager
def serving(engine=None, host="127.0.0.1", **options):
    srv = InferenceServer((host, 0), "edge", engine or EchoEngine(), **options)
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    loop.start()
    try:
        yield srv
    finally:
        srv.stop(grace_s=2)
        loop.join(5)


def connect(srv, source="127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5,
                                    source_address=(source, 0))
    sock.settimeout(5)
    return sock


def stall(sock: socket.socket) -> None:
    """Send half a request: the connection is now mid-request (busy), not idle."""
    sock.sendall(wire.encode_request("m", np.zeros(8, np.float32))[:20])


def test_idle_connections_cannot_lock_other_clients_out():
    with serving(max_connections=4, idle_timeout_s=60) as srv:
        idle = [connect(srv) for _ in range(4)]  # the 32 idle sockets, scaled down
        time.sleep(0.1)
        t0 = time.monotonic()
        with RemoteClient(("127.0.0.1", srv.port), timeout_s=5) as c:
            assert (c.infer("m", X).output == X).all()  # served, not BUSY
        assert time.monotonic() - t0 < 1.0
        assert sum(s.recv(1) == b"" for s in idle) >= 1  # an idle one gave way
        for s in idle:
            s.close()


def test_busy_only_when_every_connection_is_mid_request():
    with serving(max_connections=2, read_timeout_s=3) as srv:
        stalled = [connect(srv) for _ in range(2)]
        for s in stalled:
            stall(s)
        time.sleep(0.1)
        with pytest.raises(ServerError) as info:
            RemoteClient(("127.0.0.1", srv.port), timeout_s=5).infer("m", X)
        assert info.value.status == Status.BUSY and "all busy" in str(info.value)
        for s in stalled:
            s.close()


def test_a_silent_new_connection_is_dropped_after_the_first_byte_timeout():
    with serving(idle_timeout_s=60, first_byte_timeout_s=0.5) as srv:
        sock = connect(srv)
        t0 = time.monotonic()
        assert sock.recv(1) == b""
        assert 0.3 < time.monotonic() - t0 < 2.0  # not the 60 s idle timeout
        sock.close()


def test_one_peer_cannot_take_every_connection():
    with serving(max_connections=8, max_per_peer=2, read_timeout_s=3) as srv:
        mine = [connect(srv) for _ in range(2)]
        for s in mine:
            stall(s)
        time.sleep(0.1)
        third = connect(srv)
        data = wire.read_message(third, timeout_s=5)
        resp = wire.decode_response(data)
        assert resp.status == Status.BUSY
        assert "host loopback (127.0.0.1) at its limit of 2" in resp.error
        # another loopback address is the same host: no second allowance
        other = connect(srv, source="127.0.0.2")
        resp = wire.decode_response(wire.read_message(other, timeout_s=5))
        assert resp.status == Status.BUSY and "host loopback (127.0.0.2)" in resp.error
        for s in (*mine, third, other):
            s.close()


def test_a_slow_model_load_does_not_hold_up_requests_for_loaded_models():
    engine = InferenceEngine(warmup=False)
    engine.load("mnv3s", "cpu/fp32")
    real_build = engine._build

    def slow_build(name, placement):
        time.sleep(2.0)  # stands in for incv3's 5.4 s int8 build
        return real_build(name, placement)
    engine._build = slow_build
    x = np.zeros((1, 3, 224, 224), np.float32)
    with serving(engine, models=["mnv3s", "mnv1"]) as srv:
        loader = threading.Thread(target=lambda: RemoteClient(
            ("127.0.0.1", srv.port), timeout_s=20).infer("mnv1", x))
        loader.start()
        time.sleep(0.3)  # mnv1 is being built now
        t0 = time.monotonic()
        with RemoteClient(("127.0.0.1", srv.port), timeout_s=20) as c:
            c.infer("mnv3s", x)
        waited_s = time.monotonic() - t0
        loader.join(30)
    assert waited_s < 1.0, f"a loaded model waited {waited_s:.1f} s for another model's load"


def test_models_outside_the_allow_list_are_not_built():
    engine = InferenceEngine(warmup=False)
    with serving(engine, models=["mnv3s"]) as srv, \
            RemoteClient(("127.0.0.1", srv.port), timeout_s=20) as c:
        with pytest.raises(ServerError) as info:
            c.infer("mnv1", np.zeros((1, 3, 224, 224), np.float32))
        assert info.value.status == Status.UNKNOWN_MODEL and "not served here" in str(info.value)
        assert engine.loaded() == []


def test_a_server_with_a_token_serves_only_clients_that_present_it(monkeypatch):
    with serving(token="s3cret") as srv:
        address = ("127.0.0.1", srv.port)
        monkeypatch.delenv(TOKEN_ENV, raising=False)
        with pytest.raises(ServerError) as info:
            RemoteClient(address, timeout_s=5).infer("m", X)
        assert info.value.status == Status.UNAUTHORIZED
        with pytest.raises(ServerError) as info:
            RemoteClient(address, timeout_s=5, token="guess").infer("m", X)
        assert info.value.status == Status.UNAUTHORIZED
        assert (RemoteClient(address, timeout_s=5, token="s3cret").infer("m", X).output == X).all()
        monkeypatch.setenv(TOKEN_ENV, "s3cret")  # what ServerProcess children and clients share
        assert (RemoteClient(address, timeout_s=5).infer("m", X).output == X).all()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_loopback_works_or_is_refused_cleanly():
    if _ipv6_loopback():
        with ServerProcess("edge", host="::1", extra_args=["--models", "mnv3s"]) as srv:
            with RemoteClient(f"[::1]:{srv.port}", timeout_s=10) as c:
                with pytest.raises(ServerError) as info:  # the server answers over IPv6
                    c.infer("mnv1", np.zeros((1, 3, 224, 224), np.float32))
                assert info.value.status == Status.UNKNOWN_MODEL
    else:
        proc = subprocess.run([sys.executable, "-m", "autoscale_env", "serve",
                               "--role", "edge", "--host", "::1"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and "cannot listen on ::1" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_token_comes_from_the_environment_for_a_server_process(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    with ServerProcess("edge", extra_args=["--models", "mnv3s"], env=dict(os.environ)) as srv:
        with pytest.raises(ServerError) as info:
            RemoteClient(srv.address, timeout_s=10, token="wrong").infer("m", X)
        assert info.value.status == Status.UNAUTHORIZED
        with RemoteClient(srv.address, timeout_s=10) as c, pytest.raises(ServerError) as info:
            c.infer("mnv1", np.zeros((1, 3, 224, 224), np.float32))
        assert info.value.status == Status.UNKNOWN_MODEL  # past the handshake


def test_remote_error_for_an_unreachable_server_still_holds():
    with pytest.raises(RemoteError):
        RemoteClient(("127.0.0.1", 1), timeout_s=1).infer("m", X)
