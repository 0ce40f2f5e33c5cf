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
