"""HTTP/2 tuned for the tunnel's bulk data, on every gRPC connection of every part.

grpclib leaves two costs on the data path that its configuration cannot reach; `install`
(called once by `transport`, which every part's gRPC goes through) removes both:

- Frame size. HTTP/2 starts at 16 KiB frames, and grpclib cuts each message into frames
  of the size the peer allows, one Python-level round (h2 framing, a transport write, flow
  accounting) per frame. Every connection now advertises frames of up to `MAX_FRAME` in
  its first SETTINGS, so a 256 KiB tunnel message travels as one frame, not sixteen. Our
  gRPC peers are all kubepresence parts; the value is within what RFC 9113 allows.
- Frame repr. h2 4.x logs each received frame as `trace("Received frame: %s",
  repr(frame))`: the repr is built even when nothing logs it, and hyperframe's repr of a
  DATA frame hexlifies the *whole* payload only to keep 20 hex digits. That was 11-26 %
  of the CPU of userd, the manager and the agent (py-spy, issue 8). The replacement gives
  the same text from the first 11 bytes.

Measured with the tunnel-transport benchmark (256 MiB, same machine, same run): 228 MB/s
as grpclib ships, 301 MB/s with the cheap repr, ~500 MB/s with both.
hyperframe, h2 and grpclib are pinned (constraints.txt); the unit tests check the repr's
text against the original and that both ends really use large frames.
"""

from __future__ import annotations

import binascii
from asyncio import BaseTransport

from grpclib import protocol
from h2.settings import SettingCodes
from hyperframe import frame

MAX_FRAME = 1 << 20
_SHOWN = 20  # hex digits hyperframe keeps
_ORIGINAL_REPR = frame._raw_data_repr
_ORIGINAL_CONNECTION_MADE = protocol.H2Protocol.connection_made


def raw_data_repr(data: bytes | None) -> str:
    if not data:
        return "None"
    shown = binascii.hexlify(data[: _SHOWN // 2 + 1]).decode("ascii")
    if len(shown) > _SHOWN:
        shown = shown[:_SHOWN] + "..."
    return "<hex:" + shown + ">"


def original_raw_data_repr(data: bytes | None) -> str:
    """hyperframe's own function, for the test that the two agree."""
    return _ORIGINAL_REPR(data)


def _connection_made(self: protocol.H2Protocol, transport: BaseTransport) -> None:
    _ORIGINAL_CONNECTION_MADE(self, transport)
    self.connection._connection.update_settings({SettingCodes.MAX_FRAME_SIZE: MAX_FRAME})
    self.connection.flush()


def install() -> None:
    frame._raw_data_repr = raw_data_repr
    protocol.H2Protocol.connection_made = _connection_made  # type: ignore[method-assign]
