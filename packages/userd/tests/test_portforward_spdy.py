"""SPDY/3.1 port-forward, client side, as the runtime's spdystream server speaks it."""

from __future__ import annotations

import contextlib
import itertools
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.userd.core.portforward_spdy import (
    DATA_STREAM,
    ERROR_STREAM,
    MAX_CONTROL_LENGTH,
    Ended,
    Event,
    Ready,
    SpdyPortForward,
    SpdyProtocolError,
    parse_upgrade_head,
    refusal_message,
    upgrade_request,
)
from kubepresence.userd.core.portforward_websocket import Data, PortError

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)


def control(kind: int, body: bytes, flags: int = 0, version: int = 3) -> bytes:
    return struct.pack(">II", 0x80000000 | version << 16 | kind, flags << 24 | len(body)) + body


def data_frame(stream: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">II", stream, flags << 24 | len(payload)) + payload


def reply(stream: int, flags: int = 0) -> bytes:
    # The header block is never read by the client; any bytes do.
    return control(SYN_REPLY, struct.pack(">I", stream) + b"\x78\x9c-headers-", flags)


def opened(port: int = 8081) -> SpdyPortForward:
    session = SpdyPortForward(port)
    session.opening()
    assert session.receive(reply(ERROR_STREAM) + reply(DATA_STREAM)) == [Ready()]
    session.data_to_send()
    return session


def payloads(events: list[Event]) -> bytes:
    return b"".join(bytes(e.payload) for e in events if isinstance(e, Data))


class ServerFramer:
    """Reads the client's frames as spdystream's framer does (one zlib context)."""

    def __init__(self) -> None:
        self.inflate = zlib.decompressobj()

    def frames(self, data: bytes) -> list[tuple[str, int, int, object]]:
        out: list[tuple[str, int, int, object]] = []
        at = 0
        while at < len(data):
            first, second = struct.unpack_from(">II", data, at)
            flags, length = second >> 24, second & 0xFFFFFF
            body = data[at + 8 : at + 8 + length]
            assert len(body) == length
            at += 8 + length
            if first & 0x80000000:
                assert (first >> 16) & 0x7FFF == 3
                kind = first & 0xFFFF
                if kind == SYN_STREAM:
                    stream, associated, priority, slot = struct.unpack_from(">IIBB", body)
                    assert (associated, priority, slot) == (0, 0, 0)
                    out.append(("syn", stream, flags, self.headers(body[10:])))
                else:
                    out.append(("control", kind, flags, body))
            else:
                out.append(("data", first, flags, body))
        return out

    def headers(self, block: bytes) -> dict[str, str]:
        raw = self.inflate.decompress(block)
        (count,) = struct.unpack_from(">I", raw)
        at, headers = 4, {}
        for _ in range(count):
            parts = []
            for _ in range(2):
                (size,) = struct.unpack_from(">I", raw, at)
                parts.append(raw[at + 4 : at + 4 + size].decode())
                at += 4 + size
            assert parts[0] == parts[0].lower()  # spdystream rejects upper-case names
            headers[parts[0]] = parts[1]
        assert at == len(raw)
        return headers


def test_opening_creates_the_error_stream_then_the_data_stream() -> None:
    session = SpdyPortForward(8081, request_id=7)
    frames = ServerFramer().frames(session.opening())
    assert frames == [
        ("syn", ERROR_STREAM, 0, {"streamtype": "error", "port": "8081", "requestid": "7"}),
        ("syn", DATA_STREAM, 0, {"streamtype": "data", "port": "8081", "requestid": "7"}),
    ]
    assert not session.ready


def test_header_blocks_share_one_compression_context() -> None:
    # A second session's blocks decompressed with a fresh context per block would fail
    # after the first: the server keeps one context per connection.
    session = SpdyPortForward(80)
    raw = session.opening()
    framer = ServerFramer()
    assert len(framer.frames(raw)) == 2
    first_length = struct.unpack_from(">I", raw, 4)[0] & 0xFFFFFF
    second_block = raw[8 + first_length + 18 :]
    with pytest.raises(zlib.error):
        zlib.decompressobj().decompress(second_block)


def test_ready_after_both_replies_and_the_error_stream_is_finished() -> None:
    session = SpdyPortForward(80)
    session.opening()
    assert session.receive(reply(DATA_STREAM)) == []
    assert not session.ready
    assert session.data_to_send() == b""
    assert session.receive(reply(ERROR_STREAM)) == [Ready()]
    assert ServerFramer().frames(session.data_to_send()) == [("data", ERROR_STREAM, 1, b"")]
    assert session.receive(reply(ERROR_STREAM)) == []  # a repeated reply changes nothing
    assert session.data_to_send() == b""


def test_data_frames_are_sealed_for_the_data_stream() -> None:
    frame = SpdyPortForward.new_data_frame()
    frame += b"hello"
    sealed = SpdyPortForward.seal_data_frame(frame)
    assert ServerFramer().frames(bytes(sealed)) == [("data", DATA_STREAM, 0, b"hello")]
    fin = SpdyPortForward.seal_data_frame(SpdyPortForward.new_data_frame(), fin=True)
    assert ServerFramer().frames(bytes(fin)) == [("data", DATA_STREAM, 1, b"")]


def test_a_data_frame_too_long_for_24_bits_is_refused() -> None:
    frame = SpdyPortForward.new_data_frame() + bytes(1 << 24)
    with pytest.raises(ValueError, match="at most"):
        SpdyPortForward.seal_data_frame(frame)


def test_data_is_delivered_as_views_without_waiting_for_the_whole_frame() -> None:
    session = opened()
    frame = data_frame(DATA_STREAM, b"abcdefgh")
    events = session.receive(frame[:11])
    assert payloads(events) == b"abc"
    assert isinstance(events[0], Data)
    assert isinstance(events[0].payload, memoryview)
    assert payloads(session.receive(frame[11:])) == b"defgh"


def test_error_stream_text_is_a_port_error() -> None:
    session = opened()
    text = b"error forwarding port 9 to pod abc: connection refused\n"
    assert session.receive(data_frame(ERROR_STREAM, text)) == [
        PortError("error forwarding port 9 to pod abc: connection refused")
    ]
    assert session.receive(data_frame(ERROR_STREAM, b"", flags=1)) == []


def test_error_text_split_across_reads_is_one_error() -> None:
    session = opened()
    frame = data_frame(ERROR_STREAM, b"refused")
    assert session.receive(frame[:10]) == []
    assert session.receive(frame[10:]) == [PortError("refused")]


ERROR_FIN = data_frame(ERROR_STREAM, b"", flags=1)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (data_frame(DATA_STREAM, b"", flags=1) + ERROR_FIN, "the pod side closed the connection"),
        (ERROR_FIN + data_frame(DATA_STREAM, b"", flags=1), "the pod side closed the connection"),
        (
            control(RST_STREAM, struct.pack(">II", DATA_STREAM, 5)) + ERROR_FIN,
            "reset the connection (cancel)",
        ),
        (
            control(RST_STREAM, struct.pack(">II", ERROR_STREAM, 5))
            + control(RST_STREAM, struct.pack(">II", DATA_STREAM, 99)),
            "(status 99)",
        ),
        (control(GOAWAY, struct.pack(">II", 0, 0)), "the server went away"),
    ],
)
def test_the_forward_ends(frames: bytes, reason: str) -> None:
    session = opened()
    events = session.receive(frames)
    assert len(events) == 1
    assert isinstance(events[0], Ended)
    assert reason in events[0].reason
    assert session.ended
    assert session.receive(control(GOAWAY, struct.pack(">II", 0, 0))) == []  # once


def test_the_end_waits_for_the_error_stream_which_may_say_why() -> None:
    # The runtime finishes the data stream, then writes the error and finishes its stream.
    session = opened()
    assert session.receive(data_frame(DATA_STREAM, b"", flags=1)) == []
    assert not session.ended
    events = session.receive(data_frame(ERROR_STREAM, b"connection refused") + ERROR_FIN)
    assert events == [PortError("connection refused"), Ended("the pod side closed the connection")]


def test_data_with_fin_delivers_then_ends() -> None:
    session = opened()
    events = session.receive(data_frame(DATA_STREAM, b"last", flags=1) + ERROR_FIN)
    assert payloads(events) == b"last"
    assert isinstance(events[-1], Ended)


def test_replies_with_fin_finish_the_streams() -> None:
    session = SpdyPortForward(80)
    session.opening()
    events = session.receive(reply(ERROR_STREAM, flags=1) + reply(DATA_STREAM, flags=1))
    assert events[0] == Ready()
    assert isinstance(events[1], Ended)


def test_reset_of_the_error_stream_does_not_end_the_forward() -> None:
    session = opened()
    assert session.receive(control(RST_STREAM, struct.pack(">II", ERROR_STREAM, 5))) == []
    assert not session.ended


def test_server_pings_are_echoed_and_odd_ones_are_not() -> None:
    session = opened()
    assert session.receive(control(PING, struct.pack(">I", 2))) == []
    assert session.data_to_send() == control(PING, struct.pack(">I", 2))
    assert session.receive(control(PING, struct.pack(">I", 1))) == []
    assert session.data_to_send() == b""


def test_a_server_initiated_stream_is_refused() -> None:
    session = opened()
    syn = control(SYN_STREAM, struct.pack(">IIBB", 2, 0, 0, 0) + b"block")
    assert session.receive(syn) == []
    assert session.data_to_send() == control(RST_STREAM, struct.pack(">II", 2, 3))


def test_flow_control_and_other_frames_are_ignored() -> None:
    session = opened()
    ignored = (
        control(SETTINGS, struct.pack(">I", 1) + struct.pack(">II", 7, 65536))
        + control(WINDOW_UPDATE, struct.pack(">II", DATA_STREAM, 1000))
        + control(HEADERS, struct.pack(">I", DATA_STREAM) + b"block")
        + data_frame(5, b"someone else's")
    )
    assert session.receive(ignored + data_frame(DATA_STREAM, b"ours")) == [
        Data(memoryview(b"ours"))
    ]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (control(SYN_REPLY, b"", version=2), "version 2"),
        (control(SETTINGS, bytes(MAX_CONTROL_LENGTH + 1)), "control frame of"),
        (control(PING, b"\x00\x01"), "PING"),
        (control(RST_STREAM, b"\x00"), "RST_STREAM"),
        (control(SYN_REPLY, b"\x00"), "stream id"),
    ],
)
def test_protocol_errors(frame: bytes, message: str) -> None:
    session = SpdyPortForward(80)
    with pytest.raises(SpdyProtocolError, match=message):
        session.receive(frame)


STREAM_OF_FRAMES = (
    reply(ERROR_STREAM)
    + control(SETTINGS, struct.pack(">I", 0))
    + reply(DATA_STREAM)
    + data_frame(DATA_STREAM, b"first ")
    + control(PING, struct.pack(">I", 4))
    + data_frame(DATA_STREAM, b"")
    + data_frame(DATA_STREAM, b"second " * 50)
    + data_frame(ERROR_STREAM, b"oops")
    + data_frame(DATA_STREAM, b"third", flags=1)
    + data_frame(ERROR_STREAM, b"", flags=1)
)


def summary(session: SpdyPortForward, pieces: list[bytes]) -> tuple[object, ...]:
    events = [event for piece in pieces for event in session.receive(piece)]
    data = payloads(events)
    others = [event for event in events if not isinstance(event, Data)]
    return data, others, session.data_to_send()


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM_OF_FRAMES)), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM_OF_FRAMES)]
    pieces = [STREAM_OF_FRAMES[a:b] for a, b in itertools.pairwise(bounds)]
    whole = SpdyPortForward(80)
    whole.opening()
    split = SpdyPortForward(80)
    split.opening()
    expected = summary(whole, [STREAM_OF_FRAMES])
    assert summary(split, pieces) == expected
    data, others, owed = expected
    assert data == b"first " + b"second " * 50 + b"third"
    assert others == [Ready(), PortError("oops"), Ended("the pod side closed the connection")]
    assert owed == data_frame(ERROR_STREAM, b"", flags=1) + control(PING, struct.pack(">I", 4))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_events_or_a_protocol_error(noise: bytes) -> None:
    session = opened()
    with contextlib.suppress(SpdyProtocolError):
        session.receive(noise)


def test_upgrade_request_and_answers() -> None:
    request = upgrade_request(
        "10.0.0.1:6443", "/api/v1/namespaces/ns/pods/p/portforward", {"authorization": "Bearer t"}
    )
    lines = request.decode().split("\r\n")
    assert lines[0] == "POST /api/v1/namespaces/ns/pods/p/portforward HTTP/1.1"
    assert "Upgrade: SPDY/3.1" in lines
    assert "X-Stream-Protocol-Version: portforward.k8s.io" in lines
    assert "authorization: Bearer t" in lines
    assert request.endswith(b"\r\n\r\n")
    upgraded = parse_upgrade_head(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: portforward.k8s.io"
    )
    assert upgraded.upgraded
    wrong_protocol = parse_upgrade_head(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"X-Stream-Protocol-Version: portforward.k8s.io"
    )
    assert not wrong_protocol.upgraded
    refused = parse_upgrade_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10")
    assert (refused.status, refused.reason, refused.upgraded) == (404, "Not Found", False)
    assert refused.headers["content-length"] == "10"
    with pytest.raises(SpdyProtocolError, match="not an HTTP"):
        parse_upgrade_head(b"SSH-2.0-OpenSSH")


def test_refusal_message_prefers_the_status_message() -> None:
    body = b'{"kind":"Status","status":"Failure","message":"pods \\"x\\" not found","code":404}'
    assert refusal_message(body) == 'pods "x" not found'
    assert refusal_message(b"upgrade not allowed\n") == "upgrade not allowed"
    assert refusal_message(b'["no message"]') == '["no message"]'
