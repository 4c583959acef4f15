"""The first request of an h2c connection, decoded from bytes a real h2 client wrote."""

from __future__ import annotations

import h2.config
import h2.connection
import pytest
from hpack import Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepresence.agent.core.h2c import first_request
from kubepresence.agent.core.http1 import H2_PREFACE, NEED_DATA, ParseError, RequestHead

REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":authority", "svc:8080"),
    (":path", "/api/v1?x=1"),
    ("x-dev", "alice"),
    ("accept", "*/*"),
]


def client_bytes(headers: list[tuple[str, str]], **send: object) -> bytes:
    """What an h2 client sends first: preface, SETTINGS, then the first request."""
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    conn.increment_flow_control_window(1 << 20)  # a WINDOW_UPDATE before the request
    conn.send_headers(1, headers, **send)  # type: ignore[arg-type]
    return conn.data_to_send()


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def test_first_request_head() -> None:
    head = first_request(client_bytes(REQUEST, end_stream=True))
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.version) == ("POST", "/api/v1?x=1", "HTTP/2")
    assert head.headers == (("host", "svc:8080"), ("x-dev", "alice"), ("accept", "*/*"))
    assert head.header("x-dev") == "alice"
    assert head.raw == b""


def test_every_prefix_needs_more_data() -> None:
    data = client_bytes(REQUEST)
    for n in range(len(H2_PREFACE), len(data)):
        assert first_request(data[:n]) is NEED_DATA, n
    assert isinstance(first_request(data), RequestHead)


def test_padding_and_priority_are_skipped() -> None:
    data = client_bytes(REQUEST, priority_weight=200, end_stream=True)
    head = first_request(data)
    assert isinstance(head, RequestHead)
    assert head.method == "POST"
    # The same block by hand, padded and with a priority field.
    block = Encoder().encode([(":method", "GET"), (":path", "/p")])
    payload = bytes([3]) + b"\x00\x00\x00\x00\x10" + block + b"\x00" * 3
    data = H2_PREFACE + frame(0x4, 0, 0, b"") + frame(0x1, 0x4 | 0x8 | 0x20, 1, payload)
    head = first_request(data)
    assert isinstance(head, RequestHead)
    assert (head.method, head.target) == ("GET", "/p")


def test_continuation_frames() -> None:
    block = Encoder().encode([(":method", "GET"), (":path", "/c"), ("x-long", "v" * 100)])
    data = (
        H2_PREFACE
        + frame(0x1, 0, 1, block[:10])
        + frame(0x9, 0, 1, block[10:50])
        + frame(0x9, 0x4, 1, block[50:])
    )
    for n in range(len(H2_PREFACE), len(data)):
        assert first_request(data[:n]) is NEED_DATA
    head = first_request(data)
    assert isinstance(head, RequestHead)
    assert head.header("x-long") == "v" * 100


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n\r\n" + b"x" * 20, "not an HTTP/2 connection preface"),
        (H2_PREFACE + frame(0x0, 0x1, 1, b"data"), "data before any HEADERS"),
        (H2_PREFACE + frame(0x9, 0x4, 1, b""), "data before any HEADERS"),
        (H2_PREFACE + frame(0x1, 0x4, 0, b"\x82"), "malformed HTTP/2 HEADERS"),
        (H2_PREFACE + frame(0x1, 0x4 | 0x8, 1, b""), "malformed HTTP/2 HEADERS"),
        (H2_PREFACE + frame(0x1, 0x4 | 0x8, 1, b"\x09ab"), "malformed HTTP/2 HEADERS"),
        (
            H2_PREFACE + frame(0x1, 0, 1, b"\x82") + frame(0x4, 0, 0, b""),
            "interrupted by another frame",
        ),
        (H2_PREFACE + frame(0x1, 0x4, 1, b"\xff\xff\xff\xff"), "undecodable"),
        (H2_PREFACE + frame(0x1, 0x4, 1, b"\x84"), "without :method"),  # only :path /
        (H2_PREFACE + frame(0x4, 0, 0, b"\x00" * 70_000), "first 65536 bytes"),
    ],
)
def test_errors(data: bytes, reason: str) -> None:
    result = first_request(data)
    assert isinstance(result, ParseError), result
    assert reason in result.reason


def test_settings_floods_hit_the_limit() -> None:
    data = H2_PREFACE + frame(0x4, 0, 0, b"") * 8000
    result = first_request(data, limit=1024)
    assert isinstance(result, ParseError)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_frames_never_raise(tail: bytes) -> None:
    first_request(H2_PREFACE + tail)
    first_request(H2_PREFACE + frame(0x1, 0x4, 1, tail))
    first_request(tail)
