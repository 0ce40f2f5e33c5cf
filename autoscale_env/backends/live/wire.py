"""The live backend's binary wire format: one fixed ``struct`` header plus raw tensor bytes.

No pickle, no JSON, nothing that can execute or allocate on the sender's say-so: every field has
a fixed size and a closed set of values, and the declared payload length is checked against the
size cap *before* a byte of payload is read. This module needs only numpy (not torch), so tools
and tests can speak the protocol without the ``[live]`` extra.

Layout (little-endian, no padding), version 1::

    request  = magic "ASNW" | version u8 | type u8 (=1) | request_id u32
             | model 32s (ascii, NUL-padded) | unit 16s (e.g. "gpu/fp16")
             | dtype u8 | ndim u8 | shape 6 x u64 (unused entries 0) | payload_len u64
             | payload (C-order tensor bytes, little-endian)
    response = magic "ASNW" | version u8 | type u8 (=2) | request_id u32
             | status u8 | compute_ms f64 | device 8s ("cpu"/"cuda") | precision 8s ("fp32"...)
             | dtype u8 | ndim u8 | shape 6 x u64 | error_len u32 | payload_len u64
             | error text (utf-8, at most 4096 bytes) | payload

A response without a tensor (an error) has dtype 0, ndim 0 and payload_len 0.
"""

from __future__ import annotations

import math
import os
import re
import socket
import struct
import time
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAGIC",
    "HELLO_HEADER_BYTES",
    "MAX_ERROR_BYTES",
    "MAX_TOKEN_BYTES",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "MAX_NDIM",
    "VERSION",
    "IdleTimeout",
    "MessageTooLarge",
    "MsgType",
    "Request",
    "Response",
    "Status",
    "WireError",
    "check_token",
    "decode_hello",
    "decode_request",
    "decode_response",
    "encode_hello",
    "encode_request",
    "encode_response",
    "hello_token_bytes",
    "message_type",
    "read_message",
    "read_token",
]

MAGIC = b"ASNW"
VERSION = 1
MAX_NDIM = 6
MAX_ERROR_BYTES = 4096
#: Largest message (header included) a reader accepts unless told otherwise: 16 MiB.
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_MAX_DIM = 2**31  # no single axis this large is legitimate; refuse before multiplying
_MAX_ELEMENTS = 2**31  # nor a tensor this large, even with a zero-length axis

_PREFIX = struct.Struct("<4sBBI")
_HELLO = struct.Struct("<4sBBIH")
#: Longest shared token a HELLO carries, bytes (servers and clients refuse longer ones alike).
MAX_TOKEN_BYTES = 256
#: Size of a HELLO before its token bytes.
HELLO_HEADER_BYTES = _HELLO.size
_REQUEST = struct.Struct(f"<4sBBI32s16sBB{MAX_NDIM}QQ")
_RESPONSE = struct.Struct(f"<4sBBIBd8s8sBB{MAX_NDIM}QIQ")

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
_UNIT_RE = re.compile(r"[a-z0-9]{1,7}/[a-z0-9]{1,8}")
_WORD_RE = re.compile(r"[a-z0-9]{0,8}")

#: Wire dtype codes. 0 means "no tensor" (responses only).
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f2"),
    3: np.dtype("<i8"),
    4: np.dtype("<i4"),
    5: np.dtype("u1"),
    6: np.dtype("i1"),
    7: np.dtype("<f8"),
}
_CODES = {dt.str.lstrip("<|="): code for code, dt in DTYPES.items()}


class WireError(ValueError):
    """A message is malformed: bad magic or version, impossible fields, or truncated."""


class MessageTooLarge(WireError):
    """A message declares more bytes than the reader accepts.

    Attributes:
        declared_bytes: the total size the header announced.
        max_bytes: the reader's cap.
    """

    def __init__(self, declared_bytes: int, max_bytes: int):
        self.declared_bytes = declared_bytes
        self.max_bytes = max_bytes
        super().__init__(
            f"message of {declared_bytes} bytes exceeds the limit of {max_bytes} bytes"
        )


class IdleTimeout(TimeoutError):
    """No byte of a next message arrived within the idle timeout (a quiet, not a broken, peer)."""


class MsgType(IntEnum):
    """Message kinds."""

    REQUEST = 1
    RESPONSE = 2
    HELLO = 3
    """A client's first message to a server that wants a shared token (see :func:`encode_hello`)."""


class Status(IntEnum):
    """Response status codes."""

    OK = 0
    BAD_REQUEST = 1
    """Malformed message, or an input of the wrong dtype/shape for the model."""
    UNKNOWN_MODEL = 2
    TOO_LARGE = 3
    UNSUPPORTED = 4
    """The unit (processor/precision) cannot run here and fallback was refused."""
    INTERNAL = 5
    """Inference raised; the error text says what."""
    BUSY = 6
    """The server is at its connection limit."""
    TIMEOUT = 7
    """The request did not arrive in full within the server's read timeout."""
    UNAUTHORIZED = 8
    """The server wants a shared token first (a HELLO message), and got none or another."""


@dataclass(frozen=True)
class Request:
    """A decoded inference request."""

    model: str
    unit: str
    """Processor/precision asked for, e.g. ``"cpu/fp32"``, ``"gpu/fp16"``, ``"cpu/int8"``."""
    array: np.ndarray
    request_id: int = 0


@dataclass(frozen=True)
class Response:
    """A decoded inference response."""

    status: Status
    compute_ms: float
    """Server-measured inference time (model forward only, no queueing or transfer), ms."""
    device: str
    """Where the server actually ran it: ``"cpu"`` or ``"cuda"`` (empty on early errors)."""
    precision: str
    """Precision actually used: ``"fp32"``, ``"fp16"``, ``"int8"`` (empty on early errors)."""
    error: str
    array: np.ndarray | None
    request_id: int = 0

    @property
    def ok(self) -> bool:
        """True when the request succeeded."""
        return self.status == Status.OK


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def _ascii_field(value: str, pattern: re.Pattern[str], what: str, size: int) -> bytes:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise WireError(f"{what} {value!r} must match {pattern.pattern}")
    return value.encode("ascii").ljust(size, b"\0")


def _tensor_fields(array: np.ndarray) -> tuple[int, int, list[int], bytes]:
    array = np.asarray(array)
    code = _CODES.get(array.dtype.str.lstrip("<>|="))
    if code is None:
        raise WireError(
            f"dtype {array.dtype} cannot travel; supported: "
            f"{', '.join(str(d) for d in DTYPES.values())}"
        )
    if array.ndim > MAX_NDIM:
        raise WireError(f"tensor has {array.ndim} dimensions; at most {MAX_NDIM} can travel")
    data = np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
    shape = list(array.shape) + [0] * (MAX_NDIM - array.ndim)
    return code, array.ndim, shape, data


def _check_request_id(request_id: int) -> int:
    if not 0 <= int(request_id) < 2**32:
        raise WireError(f"request_id {request_id} is outside [0, 2**32)")
    return int(request_id)


def encode_request(model: str, array: np.ndarray, unit: str = "cpu/fp32",
                   request_id: int = 0) -> bytes:
    """Serialise one inference request.

    Args:
        model: catalog network name (ascii letters, digits, ``_ . -``; at most 32).
        array: the input tensor (numpy array; any supported dtype, at most 6 dimensions).
        unit: ``"processor/precision"`` to run on, e.g. ``"cpu/int8"``.
        request_id: echoed in the response, to pair answers with questions.

    Returns:
        The complete message bytes.

    Raises:
        WireError: a field cannot be represented.
    """
    code, ndim, shape, data = _tensor_fields(array)
    header = _REQUEST.pack(
        MAGIC, VERSION, MsgType.REQUEST, _check_request_id(request_id),
        _ascii_field(model, _NAME_RE, "model name", 32), _ascii_field(unit, _UNIT_RE, "unit", 16),
        code, ndim, *shape, len(data),
    )
    return header + data


def encode_response(status: Status | int, array: np.ndarray | None = None, *,
                    compute_ms: float = 0.0, device: str = "", precision: str = "",
                    error: str = "", request_id: int = 0) -> bytes:
    """Serialise one inference response.

    Args:
        status: a :class:`Status`.
        array: the output tensor, or None (errors).
        compute_ms: server-measured inference time, ms (finite, >= 0).
        device: ``"cpu"`` or ``"cuda"`` (or empty).
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"`` (or empty).
        error: human-readable error text; truncated to 4096 utf-8 bytes.
        request_id: the request's id.

    Returns:
        The complete message bytes.
    """
    status = Status(status)
    if not (math.isfinite(compute_ms) and compute_ms >= 0):
        raise WireError(f"compute_ms must be finite and >= 0, got {compute_ms}")
    if array is None:
        code, ndim, shape, data = 0, 0, [0] * MAX_NDIM, b""
    else:
        code, ndim, shape, data = _tensor_fields(array)
    err = error.encode("utf-8")[:MAX_ERROR_BYTES].decode("utf-8", "ignore").encode("utf-8")
    header = _RESPONSE.pack(
        MAGIC, VERSION, MsgType.RESPONSE, _check_request_id(request_id), status,
        float(compute_ms), _ascii_field(device, _WORD_RE, "device", 8),
        _ascii_field(precision, _WORD_RE, "precision", 8), code, ndim, *shape, len(err),
        len(data),
    )
    return header + err + data


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def _check_prefix(data: bytes, expected: MsgType | None = None) -> MsgType:
    if len(data) < _PREFIX.size:
        raise WireError(f"message of {len(data)} bytes is shorter than the {_PREFIX.size}-byte "
                        f"prefix")
    magic, version, kind, _ = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r}; expected {MAGIC!r} (not an autoscale message)")
    if version != VERSION:
        raise WireError(f"unsupported wire version {version}; this side speaks {VERSION}")
    if kind not in (MsgType.REQUEST, MsgType.RESPONSE, MsgType.HELLO):
        raise WireError(f"unknown message type {kind}")
    if expected is not None and kind != expected:
        raise WireError(f"expected a {expected.name.lower()}, got a {MsgType(kind).name.lower()}")
    return MsgType(kind)


def _ascii(raw: bytes, pattern: re.Pattern[str], what: str) -> str:
    text = raw.rstrip(b"\0")
    try:
        value = text.decode("ascii")
    except UnicodeDecodeError:
        raise WireError(f"{what} field is not ascii: {raw!r}") from None
    if not pattern.fullmatch(value):
        raise WireError(f"{what} {value!r} must match {pattern.pattern}")
    return value


def _tensor(code: int, ndim: int, dims: tuple[int, ...], payload: bytes,
            allow_none: bool) -> np.ndarray | None:
    if code == 0 and allow_none:
        if ndim or any(dims) or payload:
            raise WireError("a message without a tensor must have ndim 0 and no payload")
        return None
    dtype = DTYPES.get(code)
    if dtype is None:
        raise WireError(f"unknown dtype code {code}; known: {sorted(DTYPES)}")
    if ndim > MAX_NDIM:
        raise WireError(f"ndim {ndim} exceeds {MAX_NDIM}")
    if any(dims[ndim:]):
        raise WireError(f"shape entries beyond ndim {ndim} must be 0, got {dims}")
    shape = dims[:ndim]
    if any(d >= _MAX_DIM for d in shape):
        raise WireError(f"shape {shape} has an axis of 2**31 or more")
    # A zero-length axis makes the product 0, but numpy still refuses (or overflows on) shapes
    # whose other axes multiply past its index range: bound the product of the non-zero axes.
    if math.prod(d for d in shape if d) > _MAX_ELEMENTS:
        raise WireError(f"shape {shape} describes more than 2**31 elements (zero axes aside)")
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(payload):
        raise WireError(f"shape {shape} of {dtype} needs {expected} bytes, payload has "
                        f"{len(payload)}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).copy()


def _never_raw(decode):
    """Anything but a WireError escaping a decoder is a validation gap: report it as one."""
    import functools

    @functools.wraps(decode)
    def wrapper(data: bytes):
        try:
            return decode(data)
        except WireError:
            raise
        except (ValueError, TypeError, OverflowError, MemoryError, struct.error) as e:
            raise WireError(f"malformed message ({type(e).__name__}: {e})") from None
    return wrapper


def _header(data: bytes, kind: MsgType, layout: struct.Struct, what: str) -> tuple:
    """The fixed header fields of a ``kind`` message laid out as ``layout``."""
    _check_prefix(data, kind)
    if len(data) < layout.size:
        raise WireError(f"{what} of {len(data)} bytes is shorter than its {layout.size}-byte "
                        "header")
    return layout.unpack_from(data)


@_never_raw
def decode_request(data: bytes) -> Request:
    """Parse a complete request message (as :func:`read_message` returns it).

    Raises:
        WireError: anything about the message is malformed or inconsistent.
    """
    data = bytes(data)
    f = _header(data, MsgType.REQUEST, _REQUEST, "request")
    request_id, model, unit, code, ndim = f[3], f[4], f[5], f[6], f[7]
    dims, payload_len = f[8:8 + MAX_NDIM], f[8 + MAX_NDIM]
    if len(data) != _REQUEST.size + payload_len:
        raise WireError(f"request declares a {payload_len}-byte payload but carries "
                        f"{len(data) - _REQUEST.size}")
    array = _tensor(code, ndim, dims, data[_REQUEST.size:], allow_none=False)
    assert array is not None
    return Request(_ascii(model, _NAME_RE, "model name"), _ascii(unit, _UNIT_RE, "unit"), array,
                   request_id)


@_never_raw
def decode_response(data: bytes) -> Response:
    """Parse a complete response message.

    Raises:
        WireError: anything about the message is malformed or inconsistent.
    """
    data = bytes(data)
    f = _header(data, MsgType.RESPONSE, _RESPONSE, "response")
    request_id, status, compute_ms, device, precision, code, ndim = f[3:10]
    dims = f[10:10 + MAX_NDIM]
    error_len, payload_len = f[10 + MAX_NDIM], f[11 + MAX_NDIM]
    try:
        status = Status(status)
    except ValueError:
        raise WireError(f"unknown status code {status}") from None
    if not (math.isfinite(compute_ms) and compute_ms >= 0):
        raise WireError(f"compute_ms {compute_ms} is not a finite non-negative number")
    if error_len > MAX_ERROR_BYTES:
        raise WireError(f"error text of {error_len} bytes exceeds {MAX_ERROR_BYTES}")
    if len(data) != _RESPONSE.size + error_len + payload_len:
        raise WireError(f"response declares {error_len + payload_len} body bytes but carries "
                        f"{len(data) - _RESPONSE.size}")
    body = data[_RESPONSE.size:]
    error = body[:error_len].decode("utf-8", "replace")
    array = _tensor(code, ndim, dims, body[error_len:], allow_none=True)
    return Response(status, compute_ms, _ascii(device, _WORD_RE, "device"),
                    _ascii(precision, _WORD_RE, "precision"), error, array, request_id)


def check_token(token: str) -> bytes:
    """A shared token's UTF-8 bytes; the one rule both sides apply (1 to 256 bytes).

    Raises:
        WireError: the token is empty, not a string, or longer than :data:`MAX_TOKEN_BYTES`.
    """
    if not isinstance(token, str):
        raise WireError(f"a token must be a string, got {type(token).__name__}")
    raw = token.encode("utf-8")
    if not 0 < len(raw) <= MAX_TOKEN_BYTES:
        raise WireError(f"a token must be 1 to {MAX_TOKEN_BYTES} utf-8 bytes, got {len(raw)}")
    return raw


#: Environment variable holding the shared token (servers and clients read it).
TOKEN_ENV = "AUTOSCALE_SERVER_TOKEN"
#: Environment variable naming a file that holds the shared token (servers and clients).
TOKEN_FILE_ENV = "AUTOSCALE_SERVER_TOKEN_FILE"
#: Largest token file read (a token is at most 256 bytes; a newline may follow).
MAX_TOKEN_FILE_BYTES = 4096


def read_token(token: str | None = None, token_file: str | None = None, *,
               environ: dict[str, str] | None = None,
               error: type[Exception] = WireError) -> str | None:
    """The shared token: ``token``, else the file ``token_file``, else ``$AUTOSCALE_SERVER_TOKEN``,
    else the file named by ``$AUTOSCALE_SERVER_TOKEN_FILE``; None when none is set.

    A file keeps the token out of the process list; it is read bounded (a regular file of at
    most 4 KiB) and its trailing newline dropped. Servers and clients apply this one rule
    (:func:`check_token`: 1 to 256 UTF-8 bytes), so a token one side accepts the other does too.

    Raises:
        error: the file cannot be read, or the token breaks the rule (the source is named).
    """
    from autoscale_env.world.files import read_text

    env = os.environ if environ is None else environ
    source = "token"
    if not token and token_file:
        source = f"token file {token_file}"
        token = read_text(token_file, error, max_bytes=MAX_TOKEN_FILE_BYTES,
                          what="token file").rstrip("\r\n")
    if not token and env.get(TOKEN_ENV):
        source, token = f"${TOKEN_ENV}", env[TOKEN_ENV]
    if not token and env.get(TOKEN_FILE_ENV):
        source = f"token file {env[TOKEN_FILE_ENV]} (${TOKEN_FILE_ENV})"
        token = read_text(env[TOKEN_FILE_ENV], error, max_bytes=MAX_TOKEN_FILE_BYTES,
                          what="token file").rstrip("\r\n")
    if not token:
        return None
    try:
        check_token(token)
    except WireError as e:
        raise error(f"{source}: {e}") from None
    return token


def hello_token_bytes(header: bytes) -> int:
    """How many token bytes a HELLO announces, from its first :data:`HELLO_HEADER_BYTES` bytes.

    Raises:
        WireError: not a HELLO (a request sent before the token, garbage), or an announced token
            over :data:`MAX_TOKEN_BYTES` (checked before any token byte is read).
    """
    _check_prefix(header[:_PREFIX.size], MsgType.HELLO)
    n = _HELLO.unpack_from(header)[-1]
    if not 0 < n <= MAX_TOKEN_BYTES:
        raise WireError(f"hello announces a {n}-byte token; a token is 1 to {MAX_TOKEN_BYTES} "
                        f"bytes")
    return n


def encode_hello(token: str) -> bytes:
    """The handshake a client sends first to a server started with a shared token.

    The token travels in clear text: it keeps other users of a trusted network (or of this
    host) from using the server, it does not protect against anyone who can read the traffic.
    """
    raw = check_token(token)
    return _HELLO.pack(MAGIC, VERSION, MsgType.HELLO, 0, len(raw)) + raw


@_never_raw
def decode_hello(data: bytes) -> bytes:
    """The token bytes of a HELLO message.

    Raises:
        WireError: not a well-formed HELLO.
    """
    data = bytes(data)
    _check_prefix(data, MsgType.HELLO)
    if len(data) < _HELLO.size:
        raise WireError(f"hello of {len(data)} bytes is shorter than its {_HELLO.size}-byte header")
    n = _HELLO.unpack_from(data)[-1]
    if n > MAX_TOKEN_BYTES or len(data) != _HELLO.size + n:
        raise WireError(f"hello declares a {n}-byte token but carries {len(data) - _HELLO.size}")
    return data[_HELLO.size:]


def message_type(data: bytes) -> MsgType:
    """The kind of a complete message (as :func:`read_message` returns it)."""
    return _check_prefix(bytes(data[:_PREFIX.size]))


def _body_size(kind: MsgType, header: bytes) -> int:
    if kind == MsgType.HELLO:
        return _HELLO.unpack_from(header)[-1]
    if kind == MsgType.REQUEST:
        return _REQUEST.unpack_from(header)[-1]
    f = _RESPONSE.unpack_from(header)
    return f[-2] + f[-1]


# ---------------------------------------------------------------------------------------------
# Reading from a socket
# ---------------------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int, deadline: float, got: bytearray) -> None:
    """Append ``n`` bytes from ``sock`` to ``got`` before ``deadline`` (monotonic seconds)."""
    need = len(got) + n
    while len(got) < need:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"message incomplete after the read timeout ({len(got)} bytes)")
        sock.settimeout(remaining)
        chunk = sock.recv(min(need - len(got), 1 << 20))
        if not chunk:
            raise WireError(f"connection closed mid-message after {len(got)} bytes")
        got += chunk


def read_message(sock: socket.socket, max_bytes: int = DEFAULT_MAX_BYTES,
                 timeout_s: float = 10.0, idle_timeout_s: float | None = None) -> bytes | None:
    """Read one complete message from ``sock``.

    The whole message must arrive within ``timeout_s`` of its first byte (so a client trickling
    bytes cannot hold a server thread), and the header's declared size is checked against
    ``max_bytes`` before the body is read.

    Args:
        sock: a connected stream socket (its timeout setting is changed).
        max_bytes: the largest total message accepted, header included.
        timeout_s: deadline for the complete message, seconds; also the wait for the first
            byte unless ``idle_timeout_s`` is given.
        idle_timeout_s: how long to wait for the first byte (an idle keep-alive connection).

    Returns:
        The message bytes, or None when the peer closed the connection cleanly before sending
        a byte (the normal end of a keep-alive connection).

    Raises:
        MessageTooLarge: the header announces more than ``max_bytes`` (the body is not read, so
            the connection cannot be reused).
        WireError: bad magic/version/type, or the peer closed mid-message.
        IdleTimeout: no first byte within the idle wait (a :class:`TimeoutError`).
        TimeoutError: the full message did not arrive within ``timeout_s`` of its first byte.
        OSError: the socket failed (e.g. connection reset).
    """
    first_wait = timeout_s if idle_timeout_s is None else idle_timeout_s
    return _read_message(sock, max_bytes, time.monotonic() + first_wait, timeout_s, None)


def _read_message(sock: socket.socket, max_bytes: int, first_deadline: float, timeout_s: float,
                  deadline: float | None) -> bytes | None:
    """:func:`read_message` with absolute deadlines (``deadline`` caps the whole read)."""
    sock.settimeout(max(1e-3, first_deadline - time.monotonic()))
    try:
        first = sock.recv(1)
    except TimeoutError:
        raise IdleTimeout("no message arrived within the idle timeout") from None
    if not first:
        return None
    body_deadline = time.monotonic() + timeout_s
    deadline = body_deadline if deadline is None else min(deadline, body_deadline)
    got = bytearray(first)
    _recv_exact(sock, _PREFIX.size - 1, deadline, got)
    kind = _check_prefix(bytes(got))  # reject garbage before reading any further
    header_size = {MsgType.REQUEST: _REQUEST.size, MsgType.RESPONSE: _RESPONSE.size,
                   MsgType.HELLO: _HELLO.size}[kind]
    _recv_exact(sock, header_size - len(got), deadline, got)
    total = header_size + _body_size(kind, bytes(got))
    if total > max_bytes:
        raise MessageTooLarge(total, max_bytes)
    _recv_exact(sock, total - len(got), deadline, got)
    return bytes(got)
