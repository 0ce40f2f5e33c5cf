"""A real server process on 127.0.0.1 and the client: answers, faults, shaping, shutdown.

Every fault test is bounded in count and time: a handful of bad connections, timeouts of a
second or less.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

torch = pytest.importorskip("torch")

from autoscale_env.backends.live import models, wire  # noqa: E402
from autoscale_env.backends.live.client import (  # noqa: E402
    RemoteClient,
    RemoteError,
    ServerError,
    shaped_transfer_ms,
)
from autoscale_env.backends.live.executor import (  # noqa: E402
    InferenceEngine,
    Placement,
    UnsupportedUnit,
    resolve_unit,
)
from autoscale_env.backends.live.server import InferenceServer, ServerProcess  # noqa: E402
from autoscale_env.backends.live.wire import Status  # noqa: E402

from live_support import one_torch_thread  # noqa: E402,F401  (autouse fixture)

pytestmark = pytest.mark.live


MODEL = "mnv3s"  # the fastest catalog network
MAX_BYTES = 1 << 20  # the server's cap in these tests: one mnv3s image (602 KB) fits


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess("cloud", extra_args=[
        "--read-timeout-s", "1", "--idle-timeout-s", "20", "--max-bytes", str(MAX_BYTES),
        "--threads", "1", "--preload", f"{MODEL}@cpu/fp32", "--models", "all"])
    yield srv
    assert srv.stop() == 0  # SIGTERM is a clean shutdown


@pytest.fixture
def client(server):
    with RemoteClient(server.address, timeout_s=20) as c:
        yield c


def raw_connection(server, timeout_s=5.0) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=timeout_s)
    sock.settimeout(timeout_s)
    return sock


def read_response(sock: socket.socket) -> wire.Response:
    data = wire.read_message(sock, timeout_s=5)
    assert data is not None, "server closed the connection without answering"
    return wire.decode_response(data)


def assert_closed(sock: socket.socket) -> None:
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass


# -- answers ----------------------------------------------------------------------------------


def test_server_answers_with_the_same_model_as_a_local_build(client):
    x = models.example_input(MODEL)
    result = client.infer(MODEL, x, "cpu/fp32")
    with torch.no_grad():
        expected = models.build_model(MODEL)(x).numpy()
    assert result.output.shape == (1, models.NUM_CLASSES)
    np.testing.assert_allclose(result.output, expected, rtol=1e-4, atol=1e-5)
    assert result.device == "cpu" and result.precision == "fp32"
    assert 0 < result.server_ms <= result.raw_wall_ms <= result.wall_ms
    assert result.bytes_sent > x.numel() * 4 and result.bytes_received > 4000


def test_int8_and_fallback_units_report_what_ran(client):
    x = models.example_input(MODEL)
    result = client.infer(MODEL, x, "dsp/int8")
    assert (result.device, result.precision) == ("cpu", "int8")
    if not torch.cuda.is_available():
        result = client.infer(MODEL, x.numpy(), "gpu/fp16")
        assert (result.device, result.precision) == ("cpu", "fp32")


def test_shaping_stretches_the_exchange_to_the_link_model(client):
    x = models.example_input(MODEL)
    result = client.infer(MODEL, x, goodput_mbps=100.0, rtt_ms=30.0)
    link_ms = shaped_transfer_ms(result.bytes_sent + result.bytes_received, 100.0, 30.0)
    assert link_ms == pytest.approx(30 + (result.bytes_sent + result.bytes_received) * 8 / 1e5)
    assert result.wall_ms >= result.server_ms + link_ms
    assert result.wall_ms < result.raw_wall_ms + link_ms + 200  # sleeps once, not twice
    assert result.transfer_ms >= link_ms


def test_link_ms_is_added_to_the_exchange_so_the_rest_is_the_servers_time(client):
    x = models.example_input(MODEL)
    result = client.infer(MODEL, x, link_ms=40.0)
    # wall = exchange + link: the sleep is exact up to the scheduler's wake-up delay (a few ms
    # on an idle host, 30 ms of slack for a loaded one)
    assert 40.0 <= result.wall_ms - result.raw_wall_ms < 40.0 + 30.0
    with pytest.raises(ValueError, match="link_ms"):
        client.infer(MODEL, x, link_ms=-1.0)


def test_bad_requests_are_answered_and_the_connection_survives(client):
    with pytest.raises(ServerError) as info:
        client.infer("alexnet", np.zeros((1, 3, 224, 224), np.float32))
    assert info.value.status == Status.UNKNOWN_MODEL and "mnv1" in str(info.value)
    with pytest.raises(ServerError, match="shape") as info:
        client.infer(MODEL, np.zeros((1, 3, 32, 32), np.float32))
    assert info.value.status == Status.BAD_REQUEST
    with pytest.raises(ServerError, match="token ids") as info:
        client.infer("lstm_nmt", np.full((1, 32), 10**6, np.int64))
    with pytest.raises(ServerError, match="NaN"):
        client.infer(MODEL, np.full((1, 3, 224, 224), np.nan, np.float32))
    with pytest.raises(ServerError) as info:
        client.infer(MODEL, models.example_input(MODEL), "tpu/fp32")
    assert info.value.status == Status.UNSUPPORTED
    assert client.infer(MODEL, models.example_input(MODEL)).output.shape == (1, 1000)


# -- hostile clients -------------------------------------------------------------------------


def test_garbage_oversized_and_slow_clients_do_not_block_a_good_one(server, client):
    x = models.example_input(MODEL)
    slow = raw_connection(server)
    slow.sendall(wire.encode_request(MODEL, x.numpy())[:30])  # then stall mid-header
    garbage = [raw_connection(server) for _ in range(5)]
    for sock in garbage:
        sock.sendall(b"\x00\xffGET / HTTP/1.1\r\n\r\n")
    oversized = raw_connection(server)
    header = wire.encode_request(MODEL, np.zeros(1, np.float32))[:-4]
    oversized.sendall(header[:-8] + struct.pack("<Q", 64 << 20))

    # While all of those are pending, a good client is served promptly.
    t0 = time.monotonic()
    assert client.infer(MODEL, x).output.shape == (1, 1000)
    assert time.monotonic() - t0 < 5

    for sock in garbage:
        assert read_response(sock).status == Status.BAD_REQUEST
        assert_closed(sock)
        sock.close()
    resp = read_response(oversized)
    assert resp.status == Status.TOO_LARGE and "exceeds" in resp.error
    assert_closed(oversized)
    oversized.close()
    resp = read_response(slow)  # the server's read timeout is 1 s
    assert resp.status == Status.TIMEOUT
    assert_closed(slow)
    slow.close()
    assert client.infer(MODEL, x).output.shape == (1, 1000)


def test_oversized_tensor_from_the_client_raises_remote_error(client):
    big = np.zeros((2, 3, 224, 224), np.float32)  # 1.2 MB > the 1 MiB cap
    with pytest.raises(RemoteError):  # TOO_LARGE, or a reset while still sending
        client.infer(MODEL, big)
    assert client.infer(MODEL, models.example_input(MODEL)).output.shape == (1, 1000)


def test_a_client_that_disconnects_mid_request_is_dropped(server, client):
    for cut in (3, 40, 1000):
        sock = raw_connection(server)
        sock.sendall(wire.encode_request(MODEL, models.example_input(MODEL).numpy())[:cut])
        sock.close()
    assert client.infer(MODEL, models.example_input(MODEL)).output.shape == (1, 1000)


# -- dead and hung servers -------------------------------------------------------------------


def test_killed_server_makes_the_client_fail_fast():
    with ServerProcess("edge", extra_args=["--threads", "1"]) as srv:
        c = RemoteClient(srv.address, timeout_s=20)
        assert c.infer("sqz", models.example_input("sqz")).output.shape == (1, 1000)
        srv.kill()
        t0 = time.monotonic()
        with pytest.raises(RemoteError):
            c.infer("sqz", models.example_input("sqz"))
        with pytest.raises(RemoteError):  # and again, on a fresh connection attempt
            c.infer("sqz", models.example_input("sqz"))
        assert time.monotonic() - t0 < 2.0
        c.close()


def test_refused_connection_raises_remote_error_at_once():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        t0 = time.monotonic()
        with pytest.raises(RemoteError, match="Refused"):
            RemoteClient(("127.0.0.1", port), timeout_s=5).infer("mnv1", np.zeros(1, np.float32))
        assert time.monotonic() - t0 < 1.0


def test_hung_server_raises_remote_error_within_the_timeout():
    with socket.socket() as listener:  # accepts (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        client = RemoteClient(listener.getsockname(), timeout_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(RemoteError, match="no answer"):
            client.infer("mnv1", np.zeros(1, np.float32))
        assert 0.4 < time.monotonic() - t0 < 1.5


# -- in-process server: connection limit and stop --------------------------------------------


class _EchoEngine(InferenceEngine):
    """Answers every request with its input, slowly (no torch models needed)."""

    def run(self, name, unit, x):
        from autoscale_env.backends.live.executor import RunResult

        time.sleep(0.05)
        return RunResult(torch.as_tensor(x), 50.0, Placement("cpu", "fp32", False))


def test_a_full_server_replaces_its_idlest_connection_and_stop_is_clean():
    srv = InferenceServer(("127.0.0.1", 0), "edge", _EchoEngine(), max_connections=2,
                          idle_timeout_s=5)
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    loop.start()
    try:
        a = RemoteClient(("127.0.0.1", srv.port), timeout_s=5)
        b = RemoteClient(("127.0.0.1", srv.port), timeout_s=5)
        x = np.arange(4, dtype=np.float32)
        assert (a.infer("m", x).output == x).all() and (b.infer("m", x).output == x).all()
        # full of idle keep-alive connections: a third client takes the idlest one's place
        c = RemoteClient(("127.0.0.1", srv.port), timeout_s=5)
        assert (c.infer("m", x).output == x).all()
        with srv._conns_lock:
            assert len(srv._conns) <= 2
        # the evicted client reconnects on its next request, transparently
        assert (a.infer("m", x).output == x).all()
    finally:
        t0 = time.monotonic()
        srv.stop(grace_s=2)  # idle keep-alive connections must not delay it
        loop.join(5)
        assert not loop.is_alive() and time.monotonic() - t0 < 2.5


def test_resolve_unit_maps_to_this_host():
    assert resolve_unit("cpu/fp32", has_cuda=False) == Placement("cpu", "fp32", False)
    assert resolve_unit("cpu/int8", has_cuda=True) == Placement("cpu", "int8", False)
    assert resolve_unit("dsp/int8", has_cuda=True) == Placement("cpu", "int8", True)
    assert resolve_unit("gpu/fp16", has_cuda=True) == Placement("cuda", "fp16", False)
    assert resolve_unit("gpu/fp16", has_cuda=False) == Placement("cpu", "fp32", True)
    with pytest.raises(UnsupportedUnit):
        resolve_unit("gpu/fp16", has_cuda=False, allow_fallback=False)
    with pytest.raises(UnsupportedUnit, match="processor"):
        resolve_unit("npu/fp32")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_units_run_on_cuda():
    engine = InferenceEngine()
    x = models.example_input(MODEL)
    for unit, precision in (("gpu/fp32", "fp32"), ("gpu/fp16", "fp16")):
        result = engine.run(MODEL, unit, x)
        assert result.placement == Placement("cuda", precision, False)
        assert result.output.device.type == "cpu" and result.output.shape == (1, 1000)


def test_a_server_dies_with_its_parent_even_on_sigkill():
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from autoscale_env.backends.live.server import ServerProcess\n"
         "s = ServerProcess('edge'); print(s.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(server_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        else:
            os.kill(server_pid, signal.SIGKILL)
            raise AssertionError("the server outlived its SIGKILLed parent")
    finally:
        parent.kill()
