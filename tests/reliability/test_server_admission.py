"""A crowd cannot fill the live server: with a token set, connections wait in a lobby (no slot,
no thread) until they present it; hosts are counted with their aliases folded (127.0.0.0/8 and
::1 are one host, IPv4-mapped IPv6 is IPv4); nothing past a HELLO header is read before the token;
wrong tokens are answered after a growing back-off; binding beyond loopback needs a token or
``insecure``; tokens over 256 bytes are refused by both sides alike.

All on loopback and bounded: the crowd is 64 sockets in one child process, for a few seconds.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from agents.cli import main as cli_main  # noqa: E402
from autoscale_env.backends.live import wire  # noqa: E402
from autoscale_env.backends.live.client import RemoteClient, ServerError  # noqa: E402
from autoscale_env.backends.live.executor import InferenceEngine, Placement, RunResult  # noqa: E402
from autoscale_env.backends.live.server import (  # noqa: E402
    DEFAULT_MAX_MODELS,
    InferenceServer,
    ServerConfigError,
    host_identity,
    parse_allow_list,
    read_token,
)
from autoscale_env.backends.live.wire import Status  # noqa: E402

pytestmark = pytest.mark.live
X = np.arange(6, dtype=np.float32)
TOKEN = "s3cret-token"


class EchoEngine(InferenceEngine):
    """Echoes its input (no model is built)."""

    def run(self, name, unit, x):
        return RunResult(torch.as_tensor(np.asarray(x)), 1.0, Placement("cpu", "fp32", False))


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@contextlib.contextmanager
def serving(host="127.0.0.1", **options):
    srv = InferenceServer((host, 0), "edge", EchoEngine(), **options)
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    loop.start()
    try:
        yield srv
    finally:
        srv.stop(grace_s=2)
        loop.join(5)


CROWD = textwrap.dedent("""
    # 64 slow unauthenticated connections: each trickles a HELLO header one byte per 0.3 s and
    # reconnects at once whenever the server drops it. Runs until stdin closes.
    import selectors, socket, sys, threading, time
    port, sources = int(sys.argv[1]), sys.argv[2].split(",")
    hello = b"ASNW" + bytes([1, 3]) + bytes(4) + (200).to_bytes(2, "little")
    sel = selectors.DefaultSelector()
    state = {}
    def connect(k):
        src = sources[k % len(sources)]
        family = socket.AF_INET6 if ":" in src else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((src, 0))
        s.connect_ex((src if family == socket.AF_INET6 else src, port))
        state[s] = [k, 0, time.monotonic()]
        sel.register(s, selectors.EVENT_READ)
    for k in range(64):
        connect(k)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    print("crowd ready", flush=True)
    reconnects = 0
    while not done.is_set():
        for key, _ in sel.select(0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                k = state.pop(s)[0]
                sel.unregister(s)
                s.close()
                connect(k)
                reconnects += 1
        now = time.monotonic()
        for s, st in list(state.items()):
            if now - st[2] >= 0.3 and st[1] < len(hello):
                try:
                    s.send(hello[st[1]:st[1] + 1])
                    st[1] += 1
                except OSError:
                    pass
                st[2] = now
    print("reconnects", reconnects, flush=True)
""")


def test_a_token_holder_is_served_through_a_crowd_of_64_slow_unauthenticated_connections():
    dual = ipv6_loopback()
    sources = ["127.0.0.1", "127.0.0.2"] + (["::1"] if dual else [])
    with serving(host="::" if dual else "127.0.0.1", token=TOKEN) as srv:
        crowd = subprocess.Popen([sys.executable, "-c", CROWD, str(srv.port), ",".join(sources)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert crowd.stdout.readline().strip() == "crowd ready"
            time.sleep(1.0)  # the crowd is connected and trickling
            with srv._conns_lock:
                assert not srv._conns, "an unauthenticated connection holds a slot"
            served, errors = 0, []
            for k in range(24):
                host = "::1" if dual and k % 2 else "127.0.0.1"
                try:
                    with RemoteClient((host, srv.port), timeout_s=5, token=TOKEN) as c:
                        served += bool((c.infer("m", X).output == X).all())
                except (ServerError, OSError) as e:
                    errors.append(f"{host}: {e}")
            with srv._conns_lock:
                lobby = len(srv._lobby.pending)
        finally:
            crowd.stdin.close()
            out = crowd.stdout.read()
            crowd.wait(10)
    assert served >= 23, f"the token holder got {served} of 24 requests through: {errors}"
    assert lobby <= srv.max_pending
    assert "reconnects" in out  # the crowd ran to the end (it was being dropped and came back)


def test_a_request_before_the_token_is_refused_without_reading_its_payload():
    with serving(token=TOKEN, read_timeout_s=30) as srv:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        header = wire.encode_request("m", np.zeros(4 * 1024 * 1024, np.float32))[:200]
        sock.sendall(header)  # announces 16 MiB; none of it follows
        resp = wire.decode_response(wire.read_message(sock, timeout_s=10))
        assert resp.status == Status.UNAUTHORIZED and "token first" in resp.error
        assert sock.recv(1) == b""  # and closed, not waiting 30 s for the payload
        sock.close()


def test_silent_and_slow_handshakes_are_dropped_by_their_deadlines():
    with serving(token=TOKEN, first_byte_timeout_s=0.5, handshake_timeout_s=1.0) as srv:
        silent = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        slow.sendall(wire.encode_hello(TOKEN)[:5])
        assert silent.recv(1) == b""
        resp = wire.decode_response(wire.read_message(slow, timeout_s=10))
        assert resp.status == Status.TIMEOUT and "handshake" in resp.error
        silent.close()
        slow.close()


def test_wrong_tokens_are_answered_after_a_growing_back_off():
    with serving(token=TOKEN) as srv:
        waits = []
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(ServerError) as info:
                RemoteClient(("127.0.0.1", srv.port), timeout_s=10, token="guess").infer("m", X)
            assert info.value.status == Status.UNAUTHORIZED
            waits.append(time.monotonic() - t0)
        assert waits[1] >= 0.18 and waits[2] >= 0.38  # 0.1 s, then 0.2 s, then 0.4 s at least
        with RemoteClient(("127.0.0.1", srv.port), timeout_s=5, token=TOKEN) as c:
            assert (c.infer("m", X).output == X).all()  # the right token is not held back


def test_host_identity_folds_loopback_aliases_and_ipv4_mapped_addresses():
    assert {host_identity(a) for a in ("127.0.0.1", "127.0.0.2", "127.9.9.9", "::1",
                                       "::ffff:127.0.0.1")} == {"loopback"}
    assert host_identity("::ffff:10.1.2.3") == host_identity("10.1.2.3") == "10.1.2.3"
    assert host_identity("2001:db8::1") == host_identity("2001:db8::ffff") == "2001:db8::/64"
    assert host_identity("10.1.2.3") != host_identity("10.1.2.4")


def test_binding_beyond_loopback_without_a_token_is_refused_unless_insecure(capsys):
    with pytest.raises(ServerConfigError, match="refusing to listen on 0.0.0.0 without a shared"):
        InferenceServer(("0.0.0.0", 0), "edge", EchoEngine())
    InferenceServer(("0.0.0.0", 0), "edge", EchoEngine(), insecure=True).server_close()
    InferenceServer(("0.0.0.0", 0), "edge", EchoEngine(), token=TOKEN).server_close()
    # the command line refuses it too, whatever the log level
    assert cli_main(["serve", "--role", "edge", "--host", "0.0.0.0", "--log-level", "ERROR"]) == 2
    assert "--insecure" in capsys.readouterr().err


def test_tokens_over_256_bytes_are_refused_by_server_and_client_alike(tmp_path):
    long = "x" * 257
    with pytest.raises(ServerConfigError, match="1 to 256 utf-8 bytes, got 257"):
        InferenceServer(("127.0.0.1", 0), "edge", EchoEngine(), token=long)
    with pytest.raises(wire.WireError, match="1 to 256 utf-8 bytes, got 257"):
        RemoteClient(("127.0.0.1", 1), token=long)
    with serving(token="y" * 256) as srv, \
            RemoteClient(("127.0.0.1", srv.port), timeout_s=5, token="y" * 256) as c:
        assert (c.infer("m", X).output == X).all()


def test_the_token_can_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    monkeypatch.delenv(wire.TOKEN_FILE_ENV, raising=False)
    assert read_token(token_file=str(path)) == TOKEN
    monkeypatch.setenv(wire.TOKEN_FILE_ENV, str(path))
    assert read_token() == TOKEN
    with serving(token=read_token()) as srv, \
            RemoteClient(("127.0.0.1", srv.port), timeout_s=5) as c:  # the client reads it too
        assert (c.infer("m", X).output == X).all()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ServerConfigError, match="not a regular file"):
        read_token(token_file=str(tmp_path / "fifo"))


def test_a_client_whose_constructor_failed_is_collected_quietly():
    seen = []
    old, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        with pytest.raises(ValueError):
            RemoteClient("127.0.0.1:notaport")
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert not seen, seen[0].exc_value if seen else ""


def test_the_allow_list_checks_the_unit_and_the_default_caps_on_demand_builds():
    allowed = parse_allow_list(["mnv1", "mbert@cpu/int8"])
    assert allowed == {"mnv1": frozenset({"cpu/fp32"}), "mbert": frozenset({"cpu/int8"})}
    x = np.zeros((1, 3, 224, 224), np.float32)
    with serving(models=allowed) as srv, \
            RemoteClient(("127.0.0.1", srv.port), timeout_s=5) as c:
        c.infer("mnv1", x)
        with pytest.raises(ServerError, match="'mnv1' on unit 'cpu/int8' is not served") as info:
            c.infer("mnv1", x, unit="cpu/int8")  # an allowed network cannot force an INT8 build
        assert info.value.status == Status.UNKNOWN_MODEL
    from autoscale_env.backends.live import models
    names = list(models.SPECS)[:DEFAULT_MAX_MODELS + 1]  # any catalog names will do
    with serving(models=parse_allow_list(list(models.SPECS)),
                 max_models=DEFAULT_MAX_MODELS) as srv, \
            RemoteClient(("127.0.0.1", srv.port), timeout_s=5) as c:
        for name in names[:-1]:
            c.infer(name, X)  # echo: nothing is built, but the server counts what it would build
        with pytest.raises(ServerError, match=f"limit of {DEFAULT_MAX_MODELS} models"):
            c.infer(names[-1], X)
        c.infer(names[0], X)  # one it has already built is still served
