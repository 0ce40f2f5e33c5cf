"""The edge/cloud inference server: a threaded TCP server speaking :mod:`.wire`.

Run it as ``autoscale serve --role cloud --port 0`` (or ``python -m autoscale_env serve ...``): it prints
``READY <port>`` on stdout once it listens, then answers requests until SIGTERM or SIGINT.
:class:`ServerProcess` starts one as a child process and reads that line for you.

Robustness, because a server must outlive its worst client:

* every message must arrive in full within ``read_timeout_s`` of its first byte (slow or stalled
  senders are answered ``TIMEOUT`` and dropped), and an idle keep-alive connection is closed after
  ``idle_timeout_s``;
* a header announcing more than ``max_bytes`` is answered ``TOO_LARGE`` before any payload is
  read, and the connection is closed (its stream position is lost);
* garbage (bad magic/version) is answered ``BAD_REQUEST`` and the connection closed; a
  well-framed request with bad content (unknown model, wrong shape) is answered and the
  connection kept;
* at most ``max_connections`` connections (``max_per_peer`` from one address) are open at once;
  a new connection beyond that replaces the longest-idle one, and is answered ``BUSY`` only when
  every connection is mid-request, so idle connections cannot lock anyone out; a new connection
  must send its first request within ``first_byte_timeout_s``;
* models are built outside the inference lock (a request for a model still loading waits, others
  run), only from the allow-list (``--models``; by default the ``--preload`` names when given),
  and ``--preload`` builds them before ``READY``;
* an exception inside inference becomes an ``INTERNAL`` answer, never a dead server.

The server binds 127.0.0.1 by default (``--host ::1`` for IPv6 loopback). Before binding any
other address, set a shared token (``--token`` or the ``AUTOSCALE_SERVER_TOKEN`` environment
variable, which clients read too): every connection must present it first. The token travels
in clear text, so it keeps out other users of a trusted network, not an eavesdropper.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Self, TextIO

from autoscale_env.backends.live import models, wire
from autoscale_env.backends.live.executor import (
    InferenceEngine,
    InputError,
    UnsupportedUnit,
)
from autoscale_env.backends.live.wire import (
    IdleTimeout,
    MessageTooLarge,
    Status,
    WireError,
)

__all__ = ["ROLES", "TOKEN_ENV", "InferenceServer", "ServerProcess", "make_server",
           "serve"]

log = logging.getLogger(__name__)

#: Server roles: which scaled-out device this process stands in for.
ROLES = ("edge", "cloud")
#: Connections one client address may hold at once unless told otherwise.
DEFAULT_MAX_PER_PEER = 16
#: Environment variable holding the shared token (server: ``--token`` default; client too).
TOKEN_ENV = "AUTOSCALE_SERVER_TOKEN"


class _Conn:
    """What the server knows about one admitted connection."""

    __slots__ = ("peer", "idle_since", "evicted")

    def __init__(self, peer: str):
        self.peer = peer
        self.idle_since: float | None = None  # set while waiting for a next request's first byte
        self.evicted = False


def _wait_readable(sock: socket.socket, timeout_s: float) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(max(0.0, timeout_s)))


class _Handler(socketserver.BaseRequestHandler):
    """One connection: read requests until the peer closes, times out or misbehaves."""

    server: InferenceServer

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def finish(self) -> None:
        self.server._untrack(self.request)

    def _reply(self, payload: bytes) -> bool:
        try:
            self.request.settimeout(self.server.write_timeout_s)
            self.request.sendall(payload)
            return True
        except OSError:
            return False

    def _fail(self, status: Status, error: str, request_id: int = 0) -> bool:
        log.info("%s -> %s: %s", self.client_address, status.name, error)
        return self._reply(wire.encode_response(status, error=error, request_id=request_id))

    def handle(self) -> None:
        srv = self.server
        authorized = srv.token is None
        first = True
        while not srv.stopping:
            # Wait for the first byte of the next request as an *idle* connection, which a new
            # connection may evict when the server is full; a new connection gets a short wait.
            wait_s = srv.first_byte_timeout_s if first else srv.idle_timeout_s
            srv._set_idle(self.request, True)
            try:
                ready = _wait_readable(self.request, wait_s)
            except (OSError, ValueError):
                ready = False
            if not srv._set_idle(self.request, False) or not ready:
                return  # evicted, or quiet for too long: close without a word
            first = False
            try:
                data = wire.read_message(self.request, srv.max_bytes, srv.read_timeout_s,
                                         idle_timeout_s=srv.read_timeout_s)
            except MessageTooLarge as e:
                self._fail(Status.TOO_LARGE, str(e))
                return
            except IdleTimeout:
                return
            except TimeoutError:
                self._fail(Status.TIMEOUT, f"request not received in full within the read "
                                           f"timeout ({srv.read_timeout_s} s)")
                return
            except WireError as e:
                self._fail(Status.BAD_REQUEST, str(e))
                return
            except OSError:
                return
            if data is None:  # the peer closed the connection
                return
            if wire.message_type(data) == wire.MsgType.HELLO:
                authorized = srv.check_token(data)
                if not authorized:
                    self._fail(Status.UNAUTHORIZED, "wrong token")
                    return
                if not self._reply(wire.encode_response(Status.OK)):
                    return
                continue
            if not authorized:
                self._fail(Status.UNAUTHORIZED, "this server wants a shared token first (set "
                                                f"{TOKEN_ENV} or pass token= to the client)")
                return
            if not self._reply(srv.answer(data)):
                return


class InferenceServer(socketserver.ThreadingTCPServer):
    """A threaded TCP server that runs inferences through an :class:`InferenceEngine`.

    Args:
        address: ``(host, port)``; port 0 picks a free port (see :attr:`port`). An IPv6 host
            (``"::1"``) binds an IPv6 socket.
        role: ``"edge"`` or ``"cloud"`` (labels logs and thread names).
        engine: the engine to run models with (a fresh one by default).
        max_bytes: largest request accepted, bytes.
        read_timeout_s: deadline for a whole request once its first byte arrived.
        idle_timeout_s: how long an idle connection is kept open between requests.
        write_timeout_s: deadline for sending one response.
        max_connections: connections served at once.
        max_per_peer: connections one peer address may hold at once (default: 16, or
            ``max_connections`` if smaller).
        first_byte_timeout_s: how long a new connection may wait before its first request.
        models: network names this server will build and run (None: every catalog network);
            a request for another is answered ``UNKNOWN_MODEL``.
        token: a shared token every connection must present first (a HELLO message).

    When the server is full (in total, or for one peer), a new connection takes the place of
    the connection that has been idle longest (waiting for a next request); only when every
    connection is in the middle of a request is it answered ``BUSY``. So idle connections can
    never lock others out, and the clients of evicted ones simply reconnect.
    """

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 makes a burst of connects wait 1 s for a SYN retry
    # (measured: 24 connects 3.07 s; with 64, 0.0 s), which would land in measured latencies.
    request_queue_size = 64
    block_on_close = False

    def __init__(self, address: tuple[str, int], role: str = "cloud",
                 engine: InferenceEngine | None = None, *,
                 max_bytes: int = wire.DEFAULT_MAX_BYTES, read_timeout_s: float = 10.0,
                 idle_timeout_s: float = 60.0, write_timeout_s: float = 10.0,
                 max_connections: int = 32, max_per_peer: int | None = None,
                 first_byte_timeout_s: float = 5.0, models: Sequence[str] | None = None,
                 token: str | None = None):
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        self.role = role
        self.engine = engine or InferenceEngine()
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer or min(DEFAULT_MAX_PER_PEER, max_connections)
        self.first_byte_timeout_s = first_byte_timeout_s
        self.models = None if models is None else frozenset(models)
        self.token = token.encode("utf-8") if token else None
        self.stopping = False
        self._conns: dict[socket.socket, _Conn] = {}
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        """The port actually bound."""
        return self.server_address[1]

    def check_token(self, hello: bytes) -> bool:
        """True when a HELLO message carries this server's token (or the server wants none)."""
        import hmac
        if self.token is None:
            return True
        try:
            return hmac.compare_digest(wire.decode_hello(hello), self.token)
        except WireError:
            return False

    def _untrack(self, sock: socket.socket) -> None:
        with self._conns_lock:
            self._conns.pop(sock, None)

    def _set_idle(self, sock: socket.socket, idle: bool) -> bool:
        """Mark a connection idle (waiting) or busy; False if it was evicted meanwhile."""
        with self._conns_lock:
            conn = self._conns.get(sock)
            if conn is None or conn.evicted:
                return False
            conn.idle_since = time.monotonic() if idle else None
            return True

    def _evict_idlest(self, peer: str | None) -> bool:
        """Close the longest-idle connection (of ``peer``, if given); call with the lock held."""
        idle = [(c.idle_since, s) for s, c in self._conns.items()
                if c.idle_since is not None and not c.evicted and (peer is None or c.peer == peer)]
        if not idle:
            return False
        _, victim = min(idle, key=lambda t: t[0])
        self._conns[victim].evicted = True
        try:
            victim.shutdown(socket.SHUT_RDWR)  # wakes its handler, which lets go of the slot
        except OSError:
            pass
        del self._conns[victim]
        return True

    def process_request(self, request, client_address) -> None:
        """Admit a new connection, or answer BUSY and close it (socketserver hook)."""
        peer = str(client_address[0])
        reason = ""
        with self._conns_lock:  # admit (and count) the connection before its thread starts
            if self.stopping:
                reason = "server is stopping"
            else:
                mine = sum(1 for c in self._conns.values() if c.peer == peer)
                if mine >= self.max_per_peer and not self._evict_idlest(peer):
                    reason = (f"peer {peer} at its limit of {self.max_per_peer} connections, "
                              f"all busy")
                elif len(self._conns) >= self.max_connections and not self._evict_idlest(None):
                    reason = (f"server at its limit of {self.max_connections} connections, "
                              f"all busy")
            if not reason:
                self._conns[request] = _Conn(peer)
        if reason:
            try:
                request.settimeout(0.5)
                request.sendall(wire.encode_response(Status.BUSY, error=reason))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def answer(self, data: bytes) -> bytes:
        """Turn one request message into its response message (never raises)."""
        try:
            req = wire.decode_request(data)
        except Exception as e:  # noqa: BLE001 (decode wraps its errors; this is belt and braces)
            return wire.encode_response(Status.BAD_REQUEST, error=str(e))
        rid = req.request_id
        if self.models is not None and req.model not in self.models \
                and req.model in models.SPECS:  # unknown names get the engine's catalog error
            return wire.encode_response(
                Status.UNKNOWN_MODEL, request_id=rid,
                error=f"model {req.model!r} is not served here; this server builds only: "
                      f"{', '.join(sorted(self.models))}")
        try:
            result = self.engine.run(req.model, req.unit, req.array)
            out = result.output.detach().cpu().numpy()
            return wire.encode_response(
                Status.OK, out, compute_ms=result.compute_ms, device=result.placement.device,
                precision=result.placement.precision, request_id=rid)
        except KeyError as e:
            return wire.encode_response(Status.UNKNOWN_MODEL, error=str(e.args[0]),
                                        request_id=rid)
        except InputError as e:
            return wire.encode_response(Status.BAD_REQUEST, error=str(e), request_id=rid)
        except UnsupportedUnit as e:
            return wire.encode_response(Status.UNSUPPORTED, error=str(e), request_id=rid)
        except Exception as e:  # inference bugs must not kill the connection or the server
            log.exception("inference of %s on %s failed", req.model, req.unit)
            return wire.encode_response(Status.INTERNAL, error=f"{type(e).__name__}: {e}",
                                        request_id=rid)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace_s``), close everything.

        Must be called from a thread other than the one running :meth:`serve_forever`.
        """
        self.stopping = True
        self.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:  # wakes handlers blocked waiting for a next request
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with self._conns_lock:
                if not self._conns:
                    break
            time.sleep(0.02)
        self.server_close()


def make_server(role: str, host: str = "127.0.0.1", port: int = 0, **options) -> InferenceServer:
    """Create (and bind) an :class:`InferenceServer`; call ``serve_forever`` to run it."""
    if host not in ("127.0.0.1", "localhost", "::1") and not options.get("token"):
        log.warning("binding %s without --token: anyone who can reach it can use it", host)
    return InferenceServer((host, port), role, **options)


def serve(role: str, host: str = "127.0.0.1", port: int = 0, *,
          ready_stream: TextIO | None = None, stop_event: threading.Event | None = None,
          **options) -> None:
    """Run a server until SIGTERM/SIGINT (or ``stop_event``), then shut it down cleanly.

    Prints ``READY <port>`` to ``ready_stream`` (stdout by default) once listening.

    Args:
        role: ``"edge"`` or ``"cloud"``.
        host: address to bind (loopback by default).
        port: port to bind; 0 picks a free one.
        ready_stream: where the ``READY`` line goes.
        stop_event: set it to stop the server (signals set it too, when called from the main
            thread).
        **options: passed to :class:`InferenceServer`.
    """
    stop_event = stop_event or threading.Event()
    server = make_server(role, host, port, **options)
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                            name=f"autoscale-{role}-server", daemon=True)
    loop.start()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop_event.set())
    try:
        print(f"READY {server.port}", file=ready_stream or sys.stdout, flush=True)
        log.info("%s server listening on %s:%d", role, host, server.port)
        while not stop_event.wait(0.5):  # a timed wait so signals are handled promptly
            pass
    finally:
        server.stop()
        loop.join(timeout=5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("%s server on port %d stopped", role, server.port)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when its parent dies, even by SIGKILL,
    so no server outlives an interrupted run. (A no-op elsewhere.)"""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ServerProcess:
    """A server running as a child process (``python -m autoscale_env serve``).

    Example::

        with ServerProcess("cloud") as srv:
            client = RemoteClient(srv.address)

    Args:
        role: ``"edge"`` or ``"cloud"``.
        host: address to bind.
        port: port to bind (0: a free one, read back from the ``READY`` line).
        start_timeout_s: how long to wait for ``READY``.
        extra_args: more command-line arguments for the server (``autoscale serve --help``).
        env: environment for the child (defaults to this process's).
    """

    def __init__(self, role: str = "cloud", host: str = "127.0.0.1", port: int = 0, *,
                 start_timeout_s: float = 30.0, extra_args: Sequence[str] = (),
                 env: dict[str, str] | None = None, wait: bool = True):
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        self.role = role
        self.host = host
        self.port = 0
        self.start_timeout_s = start_timeout_s
        cmd = [sys.executable, "-m", "autoscale_env", "serve", "--role", role,
               "--host", host, "--port", str(port), *extra_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=env, text=True, preexec_fn=_die_with_parent)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> Self:
        """Wait for the ``READY`` line (started with ``wait=False``: start several, then wait)."""
        if not self.port:
            try:
                self.port = self._await_ready(self.start_timeout_s)
            except BaseException:
                self.stop()
                raise
        return self

    def _await_ready(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            buf = ""
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 4096).decode()
                if not chunk:
                    raise RuntimeError(f"{self.role} server exited with code {self.proc.wait()} "
                                       f"before it was ready")
                buf += chunk
                for line in buf.splitlines():
                    if line.startswith("READY "):
                        return int(line.split()[1])
        raise TimeoutError(f"{self.role} server not ready within {timeout_s} s")

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to."""
        return self.host, self.port

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the child, wait up to ``timeout_s``, then SIGKILL; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the child at once (for fault tests)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
