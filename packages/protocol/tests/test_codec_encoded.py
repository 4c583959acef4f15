"""EncodedMessage through grpclib's codec: bytes in, the same bytes out, no parsing.

Scenarios:
- a message encoded by its own type passes through as EncodedMessage unchanged and decodes
  to an equal message on the far side;
- the codec's type check still holds: an EncodedMessage is not a TunnelMessage.
"""

from __future__ import annotations

import pytest
from grpclib.encoding.proto import ProtoCodec

from kubepresence.protocol.codec import EncodedMessage
from kubepresence.protocol.gen.common import TunnelControl, TunnelControlCode, TunnelMessage


@pytest.mark.parametrize(
    "message",
    [
        TunnelMessage(data=bytes(range(256)) * 1024),
        TunnelMessage(control=TunnelControl(code=TunnelControlCode.RESET, message="gone")),
    ],
)
def test_a_relayed_message_arrives_unchanged(message: TunnelMessage) -> None:
    codec = ProtoCodec()
    wire = codec.encode(message, TunnelMessage)
    relayed = codec.decode(wire, EncodedMessage)
    assert isinstance(relayed, EncodedMessage)
    assert relayed.data is wire  # no copy on the way through
    assert codec.encode(relayed, EncodedMessage) is wire
    assert codec.decode(codec.encode(relayed, EncodedMessage), TunnelMessage) == message


def test_the_codec_still_checks_the_declared_type() -> None:
    with pytest.raises(TypeError):
        ProtoCodec().encode(EncodedMessage(b""), TunnelMessage)
