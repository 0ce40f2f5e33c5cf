"""The wire format: round trips, and malformed or hostile bytes fail only with WireError."""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from autoscale_env.backends.live import wire
from autoscale_env.backends.live.wire import (
    IdleTimeout,
    MessageTooLarge,
    Status,
    WireError,
)

pytestmark = pytest.mark.live

DTYPES = [np.dtype(d) for d in ("<f4", "<f2", "<i8", "<i4", "u1", "i1", "<f8")]
arrays = hnp.arrays(
    dtype=st.sampled_from(DTYPES),
    shape=hnp.array_shapes(min_dims=0, max_dims=wire.MAX_NDIM, min_side=0, max_side=5),
)
names = st.from_regex(r"[A-Za-z0-9_.\-]{1,32}", fullmatch=True)
units = st.sampled_from(["cpu/fp32", "gpu/fp16", "cpu/int8", "dsp/int8", "gpu/fp32"])
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@FAST
@given(model=names, unit=units, array=arrays, rid=st.integers(0, 2**32 - 1))
def test_request_round_trip(model, unit, array, rid):
    req = wire.decode_request(wire.encode_request(model, array, unit, rid))
    assert (req.model, req.unit, req.request_id) == (model, unit, rid)
    assert same(req.array, array)
    assert req.array.flags.writeable  # safe to hand to torch.from_numpy


@FAST
@given(array=st.none() | arrays, status=st.sampled_from(list(Status)),
       ms=st.floats(0, 1e6), error=st.text(max_size=50), rid=st.integers(0, 2**32 - 1))
def test_response_round_trip(array, status, ms, error, rid):
    data = wire.encode_response(status, array, compute_ms=ms, device="cuda", precision="fp16",
                                error=error, request_id=rid)
    resp = wire.decode_response(data)
    assert (resp.status, resp.compute_ms, resp.device, resp.precision, resp.error,
            resp.request_id) == (status, ms, "cuda", "fp16", error, rid)
    assert (resp.array is None) if array is None else same(resp.array, array)


@FAST
@given(data=st.binary(max_size=400))
def test_random_bytes_decode_or_raise_wire_error(data):
    for decode in (wire.decode_request, wire.decode_response):
        try:
            decode(data)
        except WireError:
            pass


@FAST
@given(array=arrays, data=st.data())
def test_corrupted_messages_decode_or_raise_wire_error(array, data):
    for message in (wire.encode_request("mnv1", array, "cpu/int8", 5),
                    wire.encode_response(Status.OK, array, compute_ms=1.0, device="cpu",
                                         precision="fp32", error="x", request_id=5)):
        buf = bytearray(message)
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(buf)))
        for candidate in (bytes(buf), bytes(buf[:cut])):
            for decode in (wire.decode_request, wire.decode_response):
                try:
                    decode(candidate)
                except WireError:
                    pass


def test_header_fields_are_validated():
    good = wire.encode_request("mnv1", np.zeros((1, 3), np.float32))
    with pytest.raises(WireError, match="magic"):
        wire.decode_request(b"XXXX" + good[4:])
    with pytest.raises(WireError, match="version"):
        wire.decode_request(good[:4] + bytes([9]) + good[5:])
    with pytest.raises(WireError, match="expected a request"):
        wire.decode_request(wire.encode_response(Status.OK))
    with pytest.raises(WireError, match="payload"):
        wire.decode_request(good[:-1])
    with pytest.raises(WireError, match="payload"):
        wire.decode_request(good + b"\0")
    with pytest.raises(WireError, match="shorter"):
        wire.decode_request(good[:20])


def test_unrepresentable_requests_are_refused_when_encoding():
    with pytest.raises(WireError, match="model name"):
        wire.encode_request("../etc/passwd", np.zeros(1, np.float32))
    with pytest.raises(WireError, match="model name"):
        wire.encode_request("x" * 33, np.zeros(1, np.float32))
    with pytest.raises(WireError, match="unit"):
        wire.encode_request("mnv1", np.zeros(1, np.float32), unit="cpu")
    with pytest.raises(WireError, match="dtype"):
        wire.encode_request("mnv1", np.zeros(1, np.complex64))
    with pytest.raises(WireError, match="dimensions"):
        wire.encode_request("mnv1", np.zeros((1,) * 7, np.float32))
    with pytest.raises(WireError):
        wire.encode_response(Status.OK, compute_ms=float("nan"))


def test_error_text_is_capped():
    resp = wire.decode_response(wire.encode_response(Status.INTERNAL, error="é" * 10_000))
    assert len(resp.error.encode()) <= wire.MAX_ERROR_BYTES and resp.array is None


def test_big_endian_arrays_travel_as_little_endian():
    a = np.arange(6, dtype=">i4").reshape(2, 3)
    req = wire.decode_request(wire.encode_request("m", a))
    assert req.array.dtype == np.dtype("<i4") and (req.array == a).all()


# -- reading from sockets -------------------------------------------------------------------


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_read_message_returns_whole_messages_and_none_at_eof(pair):
    a, b = pair
    m1 = wire.encode_request("mnv1", np.arange(10, dtype=np.float32))
    m2 = wire.encode_response(Status.OK, np.arange(3), compute_ms=2.0)
    a.sendall(m1 + m2)
    a.shutdown(socket.SHUT_WR)
    assert wire.read_message(b, timeout_s=2) == m1
    assert wire.read_message(b, timeout_s=2) == m2
    assert wire.read_message(b, timeout_s=2) is None


def test_oversized_header_is_refused_before_the_body(pair):
    a, b = pair
    header = wire.encode_request("mnv1", np.zeros(4, np.float32))[:-16]
    # Patch the declared payload length (the header's last field) to 1 GiB; send no body.
    header = header[:-8] + struct.pack("<Q", 1 << 30)
    a.sendall(header)
    t0 = time.monotonic()
    with pytest.raises(MessageTooLarge) as info:
        wire.read_message(b, max_bytes=1 << 20, timeout_s=5)
    assert time.monotonic() - t0 < 1.0  # no waiting for a body that never comes
    assert info.value.declared_bytes > 1 << 30 and isinstance(info.value, ValueError)


def test_garbage_is_refused_after_the_prefix(pair):
    a, b = pair
    a.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(WireError, match="magic"):
        wire.read_message(b, timeout_s=2)


def test_truncated_message_raises_wire_error(pair):
    a, b = pair
    a.sendall(wire.encode_request("mnv1", np.zeros(100, np.float32))[:150])
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(WireError, match="closed mid-message"):
        wire.read_message(b, timeout_s=2)


def test_trickling_sender_times_out_at_the_deadline(pair):
    a, b = pair
    message = wire.encode_request("mnv1", np.zeros(100, np.float32))
    stop = threading.Event()

    def trickle():
        for byte in message:
            if stop.wait(0.05):
                return
            try:
                a.send(bytes([byte]))
            except OSError:
                return

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        wire.read_message(b, timeout_s=0.5)
    stop.set()
    t.join()
    assert not isinstance(info.value, IdleTimeout)
    assert 0.4 < time.monotonic() - t0 < 1.5  # each byte arrives in time; the total does not


def test_idle_connection_raises_idle_timeout(pair):
    _, b = pair
    t0 = time.monotonic()
    with pytest.raises(IdleTimeout):
        wire.read_message(b, timeout_s=5, idle_timeout_s=0.2)
    assert time.monotonic() - t0 < 1.0


# ---- structured header fuzzing: every field over its whole range, on both sides ----

ZERO_AXIS_HUGE = (0, 2**31 - 1, 2**31 - 1, 2**31 - 1)  # the case: empty, yet "huge"
u64 = st.one_of(st.integers(0, 3), st.sampled_from([2**31 - 1, 2**31, 2**32, 2**63, 2**64 - 1]),
                st.integers(0, 2**64 - 1))
codes = st.one_of(st.integers(0, 8), st.integers(0, 255))  # mostly valid dtype codes and ndims
payloads = st.one_of(st.just(b""), st.binary(max_size=64))


@st.composite
def dims(draw):
    """``(ndim, six u64 shape fields)``: mostly consistent (``ndim`` entries, then zeros) with
    huge, tiny and zero axes mixed; sometimes anything at all."""
    family = draw(st.sampled_from(["anything", "degenerate", "consistent"]))
    if family == "anything":
        return draw(codes), draw(st.lists(u64, min_size=wire.MAX_NDIM, max_size=wire.MAX_NDIM))
    if family == "degenerate":  # legal-sized axes whose product is huge, one of them 0
        n = draw(st.integers(2, wire.MAX_NDIM))
        axes = draw(st.lists(st.integers(2**20, 2**31 - 1), min_size=n, max_size=n))
        axes[draw(st.integers(0, n - 1))] = 0
        return n, axes + [0] * (wire.MAX_NDIM - n)
    n = draw(st.integers(0, wire.MAX_NDIM))
    return n, draw(st.lists(u64, min_size=n, max_size=n)) + [0] * (wire.MAX_NDIM - n)


def request_header(code, ndim, shape, payload_len, rid=1) -> bytes:
    return wire._REQUEST.pack(wire.MAGIC, wire.VERSION, wire.MsgType.REQUEST, rid,
                              b"m".ljust(32, b"\0"), b"cpu/fp32".ljust(16, b"\0"), code, ndim,
                              *shape, payload_len)


def response_header(status, code, ndim, shape, error_len, payload_len, rid=1) -> bytes:
    return wire._RESPONSE.pack(wire.MAGIC, wire.VERSION, wire.MsgType.RESPONSE, rid, status,
                               1.0, b"cpu".ljust(8, b"\0"), b"fp32".ljust(8, b"\0"), code, ndim,
                               *shape, error_len, payload_len)


def padded(shape) -> list[int]:
    return list(shape) + [0] * (wire.MAX_NDIM - len(shape))


def test_zero_length_axis_with_huge_others_is_a_wire_error_on_both_sides():
    with pytest.raises(WireError, match="2\\*\\*31 elements"):
        wire.decode_request(request_header(1, 4, padded(ZERO_AXIS_HUGE), 0))
    with pytest.raises(WireError, match="2\\*\\*31 elements"):
        wire.decode_response(response_header(0, 1, 4, padded(ZERO_AXIS_HUGE), 0, 0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=codes, header=dims(), payload=payloads, status=st.integers(0, 255),
       error=st.binary(max_size=16))
def test_fuzzed_headers_decode_or_raise_wire_error_on_both_sides(code, header, payload, status,
                                                                  error):
    ndim, shape = header
    request = request_header(code, ndim, shape, len(payload)) + payload
    response = response_header(status, code, ndim, shape, len(error), len(payload)) + error + \
        payload
    for decode, message in ((wire.decode_request, request), (wire.decode_response, response)):
        try:
            decoded = decode(message)
        except WireError:
            continue
        assert decoded.array is None or decoded.array.nbytes == len(payload)


@pytest.fixture(scope="module")
def echo_server():
    torch = pytest.importorskip("torch")
    from autoscale_env.backends.live.executor import InferenceEngine, Placement, RunResult
    from autoscale_env.backends.live.server import InferenceServer

    class Echo(InferenceEngine):
        def run(self, name, unit, x):
            return RunResult(torch.as_tensor(np.asarray(x)), 1.0, Placement("cpu", "fp32", False))

    srv = InferenceServer(("127.0.0.1", 0), "edge", Echo(), read_timeout_s=2)
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    loop.start()
    yield srv
    srv.stop(grace_s=2)
    loop.join(5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(code=codes, header=dims(), payload=payloads)
def test_server_answers_every_fuzzed_header_and_keeps_serving(echo_server, code, header, payload):
    ndim, shape = header
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=5) as sock:
        sock.sendall(request_header(code, ndim, shape, len(payload)) + payload)
        data = wire.read_message(sock, timeout_s=5)
        assert data is not None, "the server closed the connection without an answer"
        resp = wire.decode_response(data)
        assert resp.status in (Status.OK, Status.BAD_REQUEST), resp
        good = wire.encode_request("m", np.arange(3, dtype=np.float32), request_id=9)
        sock.sendall(good)  # the same connection still works
        assert wire.decode_response(wire.read_message(sock, timeout_s=5)).ok


def _one_shot_server(reply: bytes):
    """A socket that answers the first message it reads with ``reply`` (a hostile server)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with conn:
            wire.read_message(conn, timeout_s=5)
            conn.sendall(reply)
            time.sleep(0.2)
        listener.close()
    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=codes, code=codes, header=dims(), payload=payloads)
def test_client_turns_every_fuzzed_reply_into_a_result_or_remote_error(status, code, header,
                                                                       payload):
    ndim, shape = header
    from autoscale_env.backends.live.client import RemoteClient, RemoteError
    address = _one_shot_server(response_header(status, code, ndim, shape, 0, len(payload)) +
                               payload)
    with RemoteClient(address, timeout_s=5) as client:
        try:
            client.infer("m", np.arange(3, dtype=np.float32))
        except RemoteError:
            pass


def test_client_raises_remote_error_for_the_zero_axis_reply():
    from autoscale_env.backends.live.client import RemoteClient, RemoteError
    address = _one_shot_server(response_header(0, 1, 4, padded(ZERO_AXIS_HUGE), 0, 0))
    with RemoteClient(address, timeout_s=5) as client, pytest.raises(RemoteError,
                                                                      match="malformed"):
        client.infer("m", np.arange(3, dtype=np.float32))
