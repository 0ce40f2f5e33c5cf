"""Client side of remote (edge/cloud) inference, with application-level link shaping.

:class:`RemoteClient` sends one tensor to an :mod:`.server` process and returns the output with
three timings: the server's own compute time, the real wall time, and the shaped wall time.

**Link shaping is done in the application, not by the kernel** (no ``tc netem``, no root). Two
forms:

* ``link_ms`` (what the live backend uses): the link's time, computed by the caller with the link
  model's own functions (:func:`autoscale_env.world.radio.offload` with no server time), is
  *added* to the loopback exchange: ``wall_ms = raw_wall_ms + link_ms``. The exchange itself (the
  server's forward pass, its (de)serialisation, the loopback socket) is then exactly
  ``wall_ms - link_ms``, the server time of the simulator's ``latency = transfer + RTT +
  server``, whatever the signal;
* ``goodput_mbps`` / ``rtt_ms``: the client sleeps until the exchange has taken at least
  ``server_ms + rtt_ms + (bytes_sent + bytes_received) * 8 / (goodput_mbps * 1000)`` (a floor:
  a slow exchange hides a short link time).

The sleep is added once, at the end: the shaped latency is right, but packets are not actually
paced, so this models a link's delay, not its congestion behaviour.

Every failure (refused, reset, closed, malformed reply, or no reply within ``timeout_s``)
raises :class:`RemoteError` (an :class:`OSError`) within the timeout; the client never hangs.
"""

from __future__ import annotations

import itertools
import socket
import time
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from autoscale_env.backends.live import wire
from autoscale_env.backends.live.wire import Status
from autoscale_env.world.errors import AutoScaleError

__all__ = ["RemoteClient", "RemoteError", "RemoteResult", "ServerError", "shaped_transfer_ms"]


class RemoteError(AutoScaleError, OSError):
    """A remote inference failed: unreachable, refused, reset, timed out or garbled."""


class ServerError(RemoteError):
    """The server answered with an error status.

    Attributes:
        status: the :class:`~autoscale_env.backends.live.wire.Status` it answered.
    """

    def __init__(self, status: Status, message: str):
        self.status = status
        super().__init__(f"server answered {status.name}: {message}")


@dataclass(frozen=True)
class RemoteResult:
    """One remote inference."""

    output: np.ndarray
    """The model output as the server sent it."""
    server_ms: float
    """Inference time measured by the server (forward pass only)."""
    wall_ms: float
    """Client-side latency including the shaping sleep: what the phone would wait."""
    raw_wall_ms: float
    """Client-side latency before shaping (the loopback exchange itself)."""
    device: str
    """Where the server ran it (``"cpu"``/``"cuda"``)."""
    precision: str
    """Precision the server used (``"fp32"``/``"fp16"``/``"int8"``)."""
    bytes_sent: int
    bytes_received: int

    @property
    def transfer_ms(self) -> float:
        """Time on the (shaped) link: ``wall_ms - server_ms``."""
        return max(0.0, self.wall_ms - self.server_ms)


def shaped_transfer_ms(n_bytes: int, goodput_mbps: float | None, rtt_ms: float = 0.0) -> float:
    """Minimum link time for ``n_bytes``: ``rtt_ms + n_bytes * 8 / goodput``, ms.

    Args:
        n_bytes: bytes moved in both directions together.
        goodput_mbps: application goodput, Mbit/s; None or inf means an unshaped link.
        rtt_ms: round-trip time, ms.
    """
    if goodput_mbps is None or goodput_mbps == float("inf"):
        return max(0.0, rtt_ms)
    if goodput_mbps <= 0:
        raise ValueError(f"goodput_mbps must be positive, got {goodput_mbps}")
    return max(0.0, rtt_ms) + n_bytes * 8 / (goodput_mbps * 1e3)


class RemoteClient:
    """A keep-alive connection to one inference server.

    Not thread-safe: use one client per thread.

    Args:
        address: ``(host, port)`` or ``"host:port"``.
        timeout_s: the most one :meth:`infer` may take before :class:`RemoteError` (shaping sleep
            excluded): connecting, sending and receiving together.
        max_response_bytes: the largest response accepted.
        max_idle_s: reconnect instead of reusing a connection idle this long (keep it below the
            server's idle timeout, 60 s by default).
        token: the server's shared token, sent first on every connection (default: the
            ``AUTOSCALE_SERVER_TOKEN`` environment variable, else the file named by
            ``AUTOSCALE_SERVER_TOKEN_FILE``; none if neither is set).
        token_file: read the token from this file instead.

    Raises:
        ValueError: (a :class:`~.wire.WireError`) a token the server could not accept either
            (empty or over 256 bytes), or an unreadable token file.
    """

    def __init__(self, address: tuple[str, int] | str, timeout_s: float = 10.0, *,
                 max_response_bytes: int = wire.DEFAULT_MAX_BYTES, max_idle_s: float = 30.0,
                 token: str | None = None, token_file: str | None = None):
        self._sock: socket.socket | None = None  # first: __del__ runs even if __init__ fails
        if isinstance(address, str):
            host, _, port = address.rpartition(":")
            address = (host.strip("[]") or "127.0.0.1", int(port))
        # token="" means "none", the environment not consulted; a given token is checked by the
        # rule the server applies (1 to 256 bytes), so it fails here, not at every connect.
        token = None if token == "" else wire.read_token(token, token_file)
        self._hello = wire.encode_hello(token) if token else None
        self.address = (address[0], int(address[1]))
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.max_idle_s = max_idle_s
        self._last_used = 0.0
        self._ids = itertools.count(1)

    # -- connection -------------------------------------------------------------------------

    def _connect(self, deadline: float) -> socket.socket:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no time left to connect")
        sock = socket.create_connection(self.address, timeout=remaining)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._hello is not None:
            try:
                sock.settimeout(max(1e-3, deadline - time.monotonic()))
                sock.sendall(self._hello)
                data = wire._read_message(sock, self.max_response_bytes, deadline,
                                          self.timeout_s, deadline)
                response = wire.decode_response(data) if data is not None else None
            except BaseException:
                sock.close()
                raise
            if response is None or not response.ok:
                sock.close()
                raise ServerError(response.status if response else Status.UNAUTHORIZED,
                                  response.error if response else "closed after the token")
        return sock

    def close(self) -> None:
        """Close the connection (a later :meth:`infer` reconnects). Safe to call twice."""
        if getattr(self, "_sock", None) is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------------

    def infer(self, model: str, array: Any, unit: str = "cpu/fp32", *,
              goodput_mbps: float | None = None, rtt_ms: float = 0.0,
              link_ms: float | None = None) -> RemoteResult:
        """Run ``model`` on the server and return its output and timings.

        Args:
            model: catalog network name.
            array: the input (numpy array or torch tensor; moved to CPU).
            unit: ``processor/precision`` on the server, e.g. ``"gpu/fp32"``.
            goodput_mbps: shaped link goodput, Mbit/s (None: no bandwidth shaping).
            rtt_ms: shaped round-trip time, ms.
            link_ms: time the link adds to the exchange, ms (module docstring); replaces the
                ``goodput_mbps`` / ``rtt_ms`` floor when given.

        Returns:
            The :class:`RemoteResult`.

        Raises:
            RemoteError: transport failure or timeout (within ``timeout_s``).
            ServerError: the server answered an error (unknown model, bad input, ...).
            WireError: the request itself cannot be encoded (a caller bug).
        """
        if link_ms is not None and not link_ms >= 0.0:
            raise ValueError(f"link_ms must be a number of ms >= 0, got {link_ms}")
        if hasattr(array, "detach"):  # a torch tensor; torch is not imported here
            array = array.detach().cpu().numpy()
        request_id = next(self._ids) % 2**32 or next(self._ids)
        message = wire.encode_request(model, np.asarray(array), unit, request_id)
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout_s
        data = self._exchange(message, deadline)
        raw_wall_ms = (time.perf_counter() - t0) * 1e3
        try:
            response = wire.decode_response(data)
        except Exception as e:  # noqa: BLE001 (whatever a garbled reply raises, the run goes on)
            self.close()
            raise RemoteError(f"malformed response from {self._where()}: {e}") from None
        if not response.ok:
            if response.request_id not in (0, request_id):
                self.close()
                raise RemoteError(f"response for request {response.request_id} from "
                                  f"{self._where()} while waiting for {request_id}")
            if response.request_id == 0:  # sent before reading the request; stream is done
                self.close()
            raise ServerError(response.status, response.error)
        if response.request_id != request_id or response.array is None:
            self.close()
            raise RemoteError(f"response for request {response.request_id} from "
                              f"{self._where()} while waiting for {request_id}")
        if link_ms is not None:
            floor_ms = raw_wall_ms + link_ms
        else:
            floor_ms = response.compute_ms + shaped_transfer_ms(len(message) + len(data),
                                                                goodput_mbps, rtt_ms)
        if floor_ms > raw_wall_ms:
            time.sleep((floor_ms - raw_wall_ms) / 1e3)
        wall_ms = (time.perf_counter() - t0) * 1e3
        return RemoteResult(response.array, response.compute_ms, wall_ms, raw_wall_ms,
                            response.device, response.precision, len(message), len(data))

    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _exchange(self, message: bytes, deadline: float) -> bytes:
        """Send ``message`` and read one response, reconnecting once on a stale connection."""
        reused = self._sock is not None and time.monotonic() - self._last_used < self.max_idle_s
        if not reused:
            self.close()
        for attempt in (0, 1):
            try:
                if self._sock is None:
                    self._sock = self._connect(deadline)
                sock = self._sock
                sock.settimeout(max(1e-3, deadline - time.monotonic()))
                sock.sendall(message)
                data = wire._read_message(sock, self.max_response_bytes, deadline,
                                          self.timeout_s, deadline)
                if data is None:
                    raise ConnectionResetError("server closed the connection without answering")
                self._last_used = time.monotonic()
                return data
            except ServerError:  # the token was refused: not a transport failure
                self.close()
                raise
            except (ConnectionError, wire.WireError) as e:
                # A keep-alive connection the server already closed fails like this before any
                # answer: reconnect and resend once (inference is idempotent).
                self.close()
                stale = reused and attempt == 0 and not isinstance(e, wire.WireError)
                if not stale or time.monotonic() >= deadline:
                    raise RemoteError(f"{self._where()}: {type(e).__name__}: {e}") from None
                reused = False
            except TimeoutError:
                self.close()
                raise RemoteError(f"{self._where()}: no answer within {self.timeout_s} s") \
                    from None
            except OSError as e:
                self.close()
                raise RemoteError(f"{self._where()}: {type(e).__name__}: {e}") from None
        raise AssertionError("unreachable")
