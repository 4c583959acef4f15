"""The tunnel codec's short way gives the bytes and messages betterproto2 gives.

Scenarios:
- any payload (empty, one-byte and multi-byte lengths) encodes to betterproto2's bytes,
  and betterproto2's bytes decode to an equal message;
- open and control messages, and other message types, go the usual way;
- bytes that start like a data message but are more (or less) than one data field are
  left to betterproto2, which parses or refuses them as before (its own way: it keeps
  two members of a oneof, and takes a payload shorter than its length).
"""

from __future__ import annotations

import pytest
from grpclib.encoding.proto import ProtoCodec
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.protocol.codec import TunnelCodec
from kubepresence.protocol.gen.common import (
    ConnectionId,
    TunnelControl,
    TunnelControlCode,
    TunnelMessage,
    TunnelOpen,
    VersionInfo,
)

CODEC = TunnelCodec()
PLAIN = ProtoCodec()


@given(st.binary(max_size=70_000))
def test_data_messages_match_betterproto2(payload: bytes) -> None:
    message = TunnelMessage(data=payload)
    wire = CODEC.encode(message, TunnelMessage)
    assert wire == PLAIN.encode(message, TunnelMessage)
    decoded = CODEC.decode(wire, TunnelMessage)
    assert decoded == PLAIN.decode(wire, TunnelMessage) == message
    assert decoded.data == payload


@pytest.mark.parametrize("size", [0, 127, 128, 16_383, 16_384, 262_144, 2_097_152])
def test_length_prefixes_at_their_boundaries(size: int) -> None:
    message = TunnelMessage(data=b"\xa5" * size)
    wire = CODEC.encode(message, TunnelMessage)
    assert wire == bytes(message)
    assert CODEC.decode(wire, TunnelMessage) == message


@pytest.mark.parametrize(
    "message",
    [
        TunnelMessage(
            open=TunnelOpen(session_id="s", connection=ConnectionId(destination_port=80))
        ),
        TunnelMessage(control=TunnelControl(code=TunnelControlCode.RESET, message="gone")),
        TunnelMessage(),
    ],
)
def test_other_tunnel_messages_go_the_usual_way(message: TunnelMessage) -> None:
    wire = CODEC.encode(message, TunnelMessage)
    assert wire == PLAIN.encode(message, TunnelMessage)
    assert CODEC.decode(wire, TunnelMessage) == message


def test_other_message_types_go_the_usual_way() -> None:
    version = VersionInfo(version="1.2.3")
    assert CODEC.encode(version, VersionInfo) == PLAIN.encode(version, VersionInfo)
    assert CODEC.decode(bytes(version), VersionInfo) == version
    with pytest.raises(TypeError):
        CODEC.encode(version, TunnelMessage)


@pytest.mark.parametrize(
    "wire",
    [
        bytes(TunnelMessage(data=b"abc"))
        + bytes(TunnelMessage(control=TunnelControl(code=TunnelControlCode.RESET))),
        b"\x12\x05abc",  # shorter than its length says
        b"\x12\x02abc",  # longer
    ],
)
def test_more_or_less_than_one_data_field_is_left_to_betterproto2(wire: bytes) -> None:
    assert CODEC.decode(wire, TunnelMessage) == PLAIN.decode(wire, TunnelMessage)


@pytest.mark.parametrize("wire", [b"\x12", b"\x12\x85"])
def test_a_broken_length_is_refused_as_before(wire: bytes) -> None:
    with pytest.raises(EOFError):
        PLAIN.decode(wire, TunnelMessage)
    with pytest.raises(EOFError):
        CODEC.decode(wire, TunnelMessage)
