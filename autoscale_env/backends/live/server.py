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
* with a shared token, a new connection waits in a *lobby* (one selector thread, no slot, no
  handler thread) until it has sent a HELLO with the right token: its first byte within
  ``first_byte_timeout_s``, the whole HELLO within ``handshake_timeout_s``. Only the 12-byte
  HELLO header and the token are ever read there: a request sent before the token is answered
  ``UNAUTHORIZED`` without reading its payload. The lobby holds at most ``max_pending``
  connections (``max_pending // 2`` per host); a newcomer takes the place of the one waiting
  longest, so a crowd of slow or silent connections cannot keep a token holder out. A wrong
  token is answered after a back-off that doubles per wrong token from that host (0.1 s up to
  5 s, forgotten after a minute), then the connection is closed;
* at most ``max_connections`` admitted connections (``max_per_peer`` per host) are open at once;
  a new connection beyond that replaces the longest-idle one, and is answered ``BUSY`` only when
  every connection is mid-request, so idle connections cannot lock anyone out; an admitted
  connection must send its first request within ``first_byte_timeout_s``;
* connections are counted per *host*: IPv4-mapped IPv6 addresses count as their IPv4 address,
  every loopback address (127.0.0.0/8 and ::1) as one host, other IPv6 addresses per /64, so
  neither a second loopback address nor IPv6 beside IPv4 buys a second allowance;
* models are built outside the inference lock (a request for a model still loading waits, others
  run), only from the allow-list of (network, unit) pairs (see :func:`parse_allow_list`), and
  ``--preload`` builds them before ``READY``;
* an exception inside inference becomes an ``INTERNAL`` answer, never a dead server.

The server binds 127.0.0.1 by default (``--host ::1`` for IPv6 loopback). Binding any other
address needs a shared token (the ``AUTOSCALE_SERVER_TOKEN`` environment variable, a file named
by ``--token-file`` or ``AUTOSCALE_SERVER_TOKEN_FILE``, or ``--token``, which other users can see
in the process list); without one the server refuses to start unless ``--insecure`` is given.
The token travels in clear text, so it keeps out other users of a trusted network, not an
eavesdropper.

Model policy: ``--models`` lists ``name`` (that network at ``cpu/fp32`` only) or ``name@unit``
entries, or ``all`` (every network at every unit, an explicit opt-in); ``--preload`` pairs are
allowed too. With neither, every network may be built at ``cpu/fp32`` only, and at most
:data:`DEFAULT_MAX_MODELS` of them: no client can make the server build all 22 networks, or an
INT8/FP16 variant nobody asked to serve.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
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

from autoscale_env.world.errors import AutoScaleError

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

__all__ = ["DEFAULT_MAX_MODELS", "ROLES", "TOKEN_ENV", "TOKEN_FILE_ENV", "InferenceServer",
           "ServerConfigError", "ServerProcess", "host_identity", "is_loopback",
           "make_server", "parse_allow_list", "read_token", "serve", "serve_command"]

log = logging.getLogger(__name__)

#: Server roles: which scaled-out device this process stands in for.
ROLES = ("edge", "cloud")
#: Connections one client address may hold at once unless told otherwise.
DEFAULT_MAX_PER_PEER = 16
#: Environment variables holding the shared token, or naming a file that holds it.
TOKEN_ENV = wire.TOKEN_ENV
TOKEN_FILE_ENV = wire.TOKEN_FILE_ENV
#: Networks a server with no ``--models``/``--preload`` builds on demand (at cpu/fp32) at most.
DEFAULT_MAX_MODELS = 4
#: Connections waiting to present the token, at most (see the module doc).
DEFAULT_MAX_PENDING = 64
#: Back-off before answering a wrong token: first, and largest, seconds.
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
#: A host's count of wrong tokens is forgotten after this many quiet seconds.
BACKOFF_FORGET_S = 60.0


class ServerConfigError(AutoScaleError, ValueError):
    """A server option is unsafe or invalid (e.g. all interfaces without a token)."""


def host_identity(address: str) -> str:
    """The host a peer address belongs to, for counting its connections.

    IPv4-mapped IPv6 (``::ffff:10.0.0.1``) counts as its IPv4 address, every loopback address
    (127.0.0.0/8 and ``::1``) as the one host ``"loopback"``, and another IPv6 address as its
    /64 (what one host is usually given), so aliases buy no extra connections.
    """
    text = str(address).split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def is_loopback(host: str) -> bool:
    """True when binding ``host`` listens on loopback only (``localhost``, 127.x, ``::1``)."""
    return host == "localhost" or host_identity(host) == "loopback"


def read_token(token: str | None = None, token_file: str | None = None, *,
               environ: dict[str, str] | None = None) -> str | None:
    """The server's shared token (see :func:`.wire.read_token`); errors as
    :class:`ServerConfigError`."""
    return wire.read_token(token, token_file, environ=environ, error=ServerConfigError)


def parse_allow_list(entries: Sequence[str]) -> dict[str, frozenset[str]]:
    """``["mnv1", "mbert@cpu/int8", "sqz@*"]`` -> ``{network: units}``.

    A bare name allows that network at ``cpu/fp32`` only; ``name@unit`` at that unit; ``name@*``
    at every unit. Unknown networks raise :class:`ServerConfigError` naming the valid ones.
    """
    allowed: dict[str, set[str]] = {}
    for entry in entries:
        name, _, unit = str(entry).strip().partition("@")
        if name not in models.SPECS:
            raise ServerConfigError(f"--models: unknown network {name!r}; valid: "
                                    f"{', '.join(models.SPECS)}")
        allowed.setdefault(name, set()).add(unit.strip() or "cpu/fp32")
    return {name: frozenset(units) for name, units in allowed.items()}


class _Conn:
    """What the server knows about one admitted connection."""

    __slots__ = ("peer", "idle_since", "evicted", "authorized")

    def __init__(self, peer: str, authorized: bool):
        self.peer = peer  # the host identity (see host_identity)
        self.idle_since: float | None = None  # set while waiting for a next request's first byte
        self.evicted = False
        self.authorized = authorized


class _Pending:
    """A connection in the lobby: accepted, token not yet checked."""

    __slots__ = ("sock", "address", "host", "since", "buf", "need", "reply", "reply_at", "round")

    def __init__(self, sock: socket.socket, address, host: str, round_: int):
        self.round = round_  # the lobby round it entered in
        self.sock = sock
        self.address = address
        self.host = host
        self.since = time.monotonic()
        self.buf = bytearray()
        self.need = wire.HELLO_HEADER_BYTES
        self.reply: bytes | None = None  # a refusal to send at reply_at (the back-off)
        self.reply_at = 0.0


class _Lobby:
    """Connections that have not presented the token: one selector thread holds them all.

    A waiting connection costs a file descriptor, not a thread or a slot. See the module doc
    for the caps, deadlines and the back-off.
    """

    def __init__(self, server: InferenceServer, max_pending: int, max_pending_per_host: int):
        self.server = server
        self.max_pending = max_pending
        self.max_per_host = max_pending_per_host
        self.pending: dict[socket.socket, _Pending] = {}
        self.failures: dict[str, tuple[int, float]] = {}  # host -> (wrong tokens, last one)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._new: collections.deque = collections.deque()
        self._round = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="autoscale-lobby", daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket, address) -> None:
        """Hand a just-accepted connection to the lobby (from the accept thread)."""
        self._new.append((sock, address))
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # the wake-up pipe is full: the lobby is awake anyway
            pass

    def close(self) -> None:
        self._closing = True
        self._wake()
        self._thread.join(5)
        for p in list(self.pending.values()):
            self._drop(p)
        while self._new:
            self._new.popleft()[0].close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        while not self._closing:
            self._round += 1
            for key, _ in self._sel.select(0.05):
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                else:
                    self._readable(key.data)
            while self._new:
                self._enter(*self._new.popleft())
            self._trim()
            self._expire()

    def _trim(self) -> None:
        """Back to the caps: drop the longest waiters (of a host over its share first).

        Only connections that entered in an earlier round are dropped, so each newcomer gets at
        least one ``select`` to deliver its token however fast a crowd reconnects behind it
        (the lobby may hold up to twice its cap for that round); a crowd's members, slow by
        definition, are the ones that wait longest, and go first.
        """
        by_host: dict[str, list[_Pending]] = collections.defaultdict(list)
        for p in self.pending.values():
            by_host[p.host].append(p)
        for mine in by_host.values():
            excess = len(mine) - self.max_per_host
            if excess > 0:
                older = sorted((p for p in mine if p.round < self._round), key=lambda p: p.since)
                for p in older[:excess]:
                    self._drop(p)
        excess = len(self.pending) - self.max_pending
        if excess > 0:
            older = sorted((p for p in self.pending.values() if p.round < self._round),
                           key=lambda p: p.since)
            for p in older[:excess]:
                self._drop(p)

    def _enter(self, sock: socket.socket, address) -> None:
        if len(self.pending) >= 2 * self.max_pending:  # the hard cap (see _trim)
            self.server.shutdown_request(sock)
            return
        p = _Pending(sock, address, host_identity(address[0]), self._round)
        try:
            sock.setblocking(False)
            self._sel.register(sock, selectors.EVENT_READ, p)
        except (OSError, ValueError):
            sock.close()
            return
        self.pending[sock] = p
        self._readable(p)  # its token has often arrived with it: no need to wait a round

    def _drop(self, p: _Pending, reply: bytes | None = None) -> None:
        self.pending.pop(p.sock, None)
        try:
            self._sel.unregister(p.sock)
        except (KeyError, ValueError, OSError):
            pass
        if reply is not None:
            try:
                p.sock.send(reply)  # small: it fits the send buffer of a fresh connection
            except OSError:
                pass
        self.server.shutdown_request(p.sock)

    def _refuse(self, p: _Pending, status: Status, error: str) -> None:
        log.info("%s -> %s: %s", p.address, status.name, error)
        self._drop(p, wire.encode_response(status, error=error))

    def _readable(self, p: _Pending) -> None:
        try:
            chunk = p.sock.recv(p.need - len(p.buf))
        except BlockingIOError:
            return
        except OSError:
            self._drop(p)
            return
        if not chunk:
            self._drop(p)
            return
        p.buf += chunk
        if len(p.buf) < p.need:
            return
        if p.need == wire.HELLO_HEADER_BYTES:  # the header: what is this, how long a token?
            try:
                kind = wire.message_type(bytes(p.buf))
            except WireError as e:
                self._refuse(p, Status.BAD_REQUEST, str(e))
                return
            if kind != wire.MsgType.HELLO:  # a request before the token: its payload stays unread
                self._refuse(p, Status.UNAUTHORIZED, "this server wants a shared token first (set "
                                                     f"{TOKEN_ENV} or pass token= to the client)")
                return
            try:
                p.need += wire.hello_token_bytes(bytes(p.buf))
            except WireError as e:
                self._refuse(p, Status.UNAUTHORIZED, str(e))
            return
        if self.server.check_token(bytes(p.buf)):
            self.pending.pop(p.sock, None)
            self._sel.unregister(p.sock)
            self.failures.pop(p.host, None)
            self.server._admit_authorized(p.sock, p.address)
            return
        now = time.monotonic()
        count, last = self.failures.get(p.host, (0, 0.0))
        count = 1 if now - last > BACKOFF_FORGET_S else count + 1
        self.failures[p.host] = (count, now)
        if len(self.failures) > 4096:  # forget quiet hosts so the table stays small
            self.failures = {h: v for h, v in self.failures.items()
                             if now - v[1] <= BACKOFF_FORGET_S}
        delay_s = min(BACKOFF_FIRST_S * 2 ** min(count - 1, 16), BACKOFF_MAX_S)
        log.info("%s: wrong token (%d from %s); answering in %.1f s", p.address, count, p.host,
                 delay_s)
        self._sel.unregister(p.sock)  # nothing more is read from it
        p.reply = wire.encode_response(Status.UNAUTHORIZED, error="wrong token")
        p.reply_at = now + delay_s

    def _expire(self) -> None:
        now = time.monotonic()
        srv = self.server
        for p in list(self.pending.values()):
            if p.reply is not None:
                if now >= p.reply_at:
                    self._drop(p, p.reply)
            elif not p.buf and now - p.since > srv.first_byte_timeout_s:
                self._drop(p)  # silent since it connected: close without a word
            elif now - p.since > srv.handshake_timeout_s:
                self._refuse(p, Status.TIMEOUT, f"the token did not arrive within the handshake "
                                                f"timeout ({srv.handshake_timeout_s} s)")


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
        authorized = srv.token is None or srv._authorized(self.request)
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
        first_byte_timeout_s: how long a new connection may wait before its first byte.
        models: the allow-list: ``name`` (at cpu/fp32), ``name@unit`` or ``name@*`` entries, or
            a :func:`parse_allow_list` dict; None: every network at every unit. A request for
            anything else is answered ``UNKNOWN_MODEL`` and nothing is built.
        max_models: most distinct (network, unit) pairs built on demand (None: no cap).
        token: a shared token every connection must present first (a HELLO message).
        handshake_timeout_s: with a token, the whole HELLO must arrive within this many seconds
            of the connect.
        max_pending: with a token, connections waiting to present it, at most (half of that
            per host).
        insecure: allow binding beyond loopback without a token.

    Raises:
        ServerConfigError: a non-loopback ``address`` without a token (and not ``insecure``),
            or a token of over 256 bytes.

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
                 first_byte_timeout_s: float = 5.0,
                 models: Sequence[str] | dict[str, frozenset[str]] | None = None,
                 max_models: int | None = None, token: str | None = None,
                 handshake_timeout_s: float = 3.0, max_pending: int = DEFAULT_MAX_PENDING,
                 insecure: bool = False):
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if token is not None:
            try:
                wire.check_token(token)  # the rule clients apply: no token only one side takes
            except WireError as e:
                raise ServerConfigError(f"token: {e}") from None
        if not token and not insecure and not is_loopback(address[0]):
            raise ServerConfigError(
                f"refusing to listen on {address[0]} without a shared token: anyone who can "
                f"reach it could use it. Set {TOKEN_ENV}, or --token-file / {TOKEN_FILE_ENV}, "
                f"or pass --insecure to accept that")
        for name, value in (("max_pending", max_pending), ("max_connections", max_connections)):
            if int(value) < 1:
                raise ServerConfigError(f"{name} must be >= 1, got {value}")
        self.role = role
        self.engine = engine or InferenceEngine()
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.write_timeout_s = write_timeout_s
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer or min(DEFAULT_MAX_PER_PEER, max_connections)
        self.first_byte_timeout_s = first_byte_timeout_s
        self.models = None if models is None else (
            dict(models) if isinstance(models, dict) else parse_allow_list(models))
        self.max_models = max_models
        self._built: set[tuple[str, str]] = set()
        self._built_lock = threading.Lock()
        self.token = token.encode("utf-8") if token else None
        self.handshake_timeout_s = handshake_timeout_s
        self.max_pending = int(max_pending)
        self.stopping = False
        self._lobby: _Lobby | None = None
        self._conns: dict[socket.socket, _Conn] = {}
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        if self.token is not None:
            self._lobby = _Lobby(self, self.max_pending, max(1, self.max_pending // 2))

    @property
    def port(self) -> int:
        """The port actually bound."""
        return self.server_address[1]

    def check_token(self, hello: bytes) -> bool:
        """True when a HELLO message carries this server's token (or the server wants none)."""
        if self.token is None:
            return True
        try:
            return hmac.compare_digest(wire.decode_hello(hello), self.token)
        except WireError:
            return False

    def _authorized(self, sock: socket.socket) -> bool:
        with self._conns_lock:
            conn = self._conns.get(sock)
            return conn is not None and conn.authorized

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
        """A new connection: to the lobby when a token is wanted, else admit it or answer BUSY
        (socketserver hook)."""
        if self._lobby is not None:
            self._lobby.add(request, client_address)
            return
        self._admit(request, client_address, authorized=True)

    def _admit_authorized(self, request, client_address) -> None:
        """A lobby connection that presented the token: admit it (answering its HELLO OK)."""
        request.setblocking(True)
        self._admit(request, client_address, authorized=True, hello=True)

    def _admit(self, request, client_address, *, authorized: bool, hello: bool = False) -> None:
        """Take a slot for the connection and start its thread, or answer BUSY and close it."""
        peer = host_identity(client_address[0])
        reason = ""
        with self._conns_lock:  # admit (and count) the connection before its thread starts
            if self.stopping:
                reason = "server is stopping"
            else:
                mine = sum(1 for c in self._conns.values() if c.peer == peer)
                if mine >= self.max_per_peer and not self._evict_idlest(peer):
                    reason = (f"host {peer} ({client_address[0]}) at its limit of "
                              f"{self.max_per_peer} connections, all busy")
                elif len(self._conns) >= self.max_connections and not self._evict_idlest(None):
                    reason = (f"server at its limit of {self.max_connections} connections, "
                              f"all busy")
            if not reason:
                self._conns[request] = _Conn(peer, authorized)
        if hello and not reason:
            try:
                request.settimeout(0.5)
                request.sendall(wire.encode_response(Status.OK))
            except OSError:
                self._untrack(request)
                self.shutdown_request(request)
                return
        if reason:
            try:
                request.settimeout(0.5)
                request.sendall(wire.encode_response(Status.BUSY, error=reason))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _allowed(self, name: str, unit: str) -> str:
        """Why ``name`` on ``unit`` is not served here ('' when it is)."""
        if self.models is not None:
            units = self.models.get(name)
            if units is None or not ("*" in units or unit in units):
                served = ", ".join(f"{n}@{'/'.join(sorted(u))}" for n, u in
                                   sorted(self.models.items()))
                return (f"model {name!r} on unit {unit!r} is not served here; this server "
                        f"builds only: {served}")
        if self.max_models is not None:
            with self._built_lock:
                if (name, unit) not in self._built:
                    if len(self._built) >= self.max_models:
                        return (f"model {name!r} on unit {unit!r} is not served here: this server "
                                f"has built its limit of {self.max_models} models "
                                f"({', '.join(f'{n}@{u}' for n, u in sorted(self._built))}); "
                                f"start it with --models or --preload to choose")
                    self._built.add((name, unit))
        return ""

    def answer(self, data: bytes) -> bytes:
        """Turn one request message into its response message (never raises)."""
        try:
            req = wire.decode_request(data)
        except Exception as e:  # noqa: BLE001 (decode wraps its errors; this is belt and braces)
            return wire.encode_response(Status.BAD_REQUEST, error=str(e))
        rid = req.request_id
        if req.model in models.SPECS:  # unknown names get the engine's catalog error
            refusal = self._allowed(req.model, req.unit)
            if refusal:
                return wire.encode_response(Status.UNKNOWN_MODEL, request_id=rid, error=refusal)
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
        if self._lobby is not None:
            self._lobby.close()
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
    if not is_loopback(host) and not options.get("token"):  # only with insecure=True
        log.warning("listening on %s without a token (--insecure): anyone who can reach it can "
                    "use it", host)
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


def serve_command(*, role: str, host: str = "127.0.0.1", port: int = 0,
                  max_bytes: int = wire.DEFAULT_MAX_BYTES, read_timeout_s: float = 10.0,
                  idle_timeout_s: float = 60.0, max_connections: int = 32,
                  max_per_peer: int | None = None, first_byte_timeout_s: float = 5.0,
                  handshake_timeout_s: float = 3.0, max_pending: int = DEFAULT_MAX_PENDING,
                  models: str | None = None, token: str | None = None,
                  token_file: str | None = None, insecure: bool = False, max_batch: int = 8,
                  seed: int = 0, threads: int = 0, no_fallback: bool = False, preload: str = "",
                  log_level: str = "WARNING", quiet: bool = False) -> int:
    """``autoscale serve`` with its options as keyword arguments (what any front end calls).

    Returns:
        The exit code: 0 after a clean shutdown, 2 when the port cannot be bound.

    Raises:
        ServerConfigError: an option is refused (no token beyond loopback without ``insecure``,
            a bad token or token file, an unknown network); the message names it.
    """
    if role not in ROLES:
        raise ServerConfigError(f"--role {role!r} is not one of {', '.join(ROLES)}")
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    pairs = [(name, unit or "cpu/fp32")
             for name, _, unit in (item.strip().partition("@")
                                   for item in filter(None, preload.split(",")))]
    for name, _ in pairs:
        if name not in models_catalog():
            raise ServerConfigError(f"--preload {name}: unknown network; valid: "
                                    f"{', '.join(models_catalog())}")
    token = read_token(token, token_file)
    if not token and not insecure and not is_loopback(host):
        raise ServerConfigError(
            f"refusing to listen on {host} without a shared token: anyone who can reach it could "
            f"use it. Set ${TOKEN_ENV}, or --token-file / ${TOKEN_FILE_ENV}, or pass --insecure "
            f"to accept that")
    max_models = None
    if models is None:  # the --preload pairs; else any network at cpu/fp32, a few at most
        allowed = parse_allow_list([f"{n}@{u}" for n, u in pairs] or list(models_catalog()))
        max_models = None if pairs else DEFAULT_MAX_MODELS
    elif models.strip() == "all":
        allowed = None
    else:
        allowed = parse_allow_list([*filter(None, (m.strip() for m in models.split(","))),
                                    *(f"{n}@{u}" for n, u in pairs)])
    if threads:
        import torch

        torch.set_num_threads(threads)
    engine = InferenceEngine(seed=seed, allow_fallback=not no_fallback, max_batch=max_batch)
    for name, unit in pairs:
        t0 = time.perf_counter()
        engine.load(name, unit)  # built and warmed with one inference
        if not quiet:
            print(f"autoscale {role} server: {name} {unit} loaded and warmed "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    try:
        serve(role, host, port, engine=engine, max_bytes=max_bytes,
              read_timeout_s=read_timeout_s, idle_timeout_s=idle_timeout_s,
              max_connections=max_connections, max_per_peer=max_per_peer,
              first_byte_timeout_s=first_byte_timeout_s, models=allowed, max_models=max_models,
              token=token, handshake_timeout_s=handshake_timeout_s, max_pending=max_pending,
              insecure=insecure)
    except OSError as e:  # e.g. --host ::1 on a host without IPv6, or a port in use
        print(f"autoscale serve: error: cannot listen on {host} port {port}: "
              f"{e.strerror or e}", file=sys.stderr)
        return 2
    return 0


def models_catalog() -> dict:
    """The networks a server can build (:data:`.models.SPECS`)."""
    return models.SPECS
