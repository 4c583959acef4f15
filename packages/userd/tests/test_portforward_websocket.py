"""Port-forward framing (v4.channel.k8s.io) as the API server speaks it."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.userd.core.portforward_websocket import (
    Data,
    PortError,
    PortForwardFraming,
    PortForwardProtocolError,
)


def announce(channel: int, port: int) -> bytes:
    return bytes((channel,)) + struct.pack("<H", port)


def test_announcements_then_data_and_errors() -> None:
    framing = PortForwardFraming(8080)
    readiness = []
    for channel in (0, 1):
        assert framing.receive(announce(channel, 8080)) == []
        readiness.append(framing.ready)
    assert readiness == [False, True]
    assert framing.receive(b"\x00hello") == [Data(memoryview(b"hello"))]
    assert framing.receive(b"\x01failed to connect to localhost:8080\n") == [
        PortError("failed to connect to localhost:8080")
    ]


def test_announcement_may_carry_data() -> None:
    framing = PortForwardFraming(80)
    assert framing.receive(announce(0, 80) + b"early") == [Data(memoryview(b"early"))]


def test_data_message_prefix() -> None:
    assert PortForwardFraming.data_message(b"abc") == b"\x00abc"
    message = PortForwardFraming.new_data_message()
    message += b"abc"
    assert message == b"\x00abc"


def test_received_data_is_a_view_of_the_message() -> None:
    framing = PortForwardFraming(80)
    framing.receive(announce(0, 80))
    message = b"\x00" + bytes(range(200))
    [event] = framing.receive(message)
    assert isinstance(event, Data)
    assert isinstance(event.payload, memoryview)
    assert event.payload.obj is message  # no copy
    assert event.payload == bytes(range(200))


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"", "empty"),
        (b"\x02xx", "unexpected channel 2"),
        (b"\x00\x01", "without a port"),
        (announce(0, 81), "announced port 81"),
    ],
)
def test_protocol_errors(message: bytes, reason: str) -> None:
    with pytest.raises(PortForwardProtocolError, match=reason):
        PortForwardFraming(80).receive(message)


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_messages_raise_only_protocol_errors(messages: list[bytes]) -> None:
    framing = PortForwardFraming(8080)
    for message in messages:
        with contextlib.suppress(PortForwardProtocolError):
            framing.receive(message)
