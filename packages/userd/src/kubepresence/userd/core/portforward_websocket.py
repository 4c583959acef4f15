"""The framing of a Kubernetes port-forward over WebSocket (`v4.channel.k8s.io`).

The API server relays a pod port over one WebSocket. Every binary message starts with a
channel byte: for the i-th requested port, channel 2i carries data and 2i+1 carries error
text. The first message the server sends on each channel is the port number as a
little-endian uint16, announcing that the channel is open. The client writes data on
channel 0 (one port per WebSocket here) with no announcement of its own. There is no
half-close in this version of the protocol: a flow ends when the WebSocket closes.

`PortForwardFraming` turns received messages into events and data into messages; it does
no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

DATA_CHANNEL = 0
ERROR_CHANNEL = 1
_PORT = struct.Struct("<H")


class PortForwardProtocolError(Exception):
    """The server sent something the protocol does not allow."""


@dataclass(frozen=True)
class Data:
    """Bytes from the pod: a view into the received message (no copy)."""

    payload: memoryview


@dataclass(frozen=True)
class PortError:
    """The server could not forward (e.g. nothing listens on the pod port)."""

    message: str


Event = Data | PortError


class PortForwardFraming:
    def __init__(self, port: int) -> None:
        self.port = port
        self._announced = {DATA_CHANNEL: False, ERROR_CHANNEL: False}

    @property
    def ready(self) -> bool:
        """Both channels announced: the pod side is there."""
        return all(self._announced.values())

    def receive(self, message: bytes) -> list[Event]:
        """Events carried by one received WebSocket message."""
        if not message:
            raise PortForwardProtocolError("empty message")
        channel, body = message[0], memoryview(message)[1:]
        if channel not in self._announced:
            raise PortForwardProtocolError(f"message on unexpected channel {channel}")
        if not self._announced[channel]:
            if len(body) < _PORT.size:
                raise PortForwardProtocolError(f"channel {channel} announced without a port")
            (port,) = _PORT.unpack_from(body)
            if port != self.port:
                raise PortForwardProtocolError(f"channel {channel} announced port {port}")
            self._announced[channel] = True
            body = body[_PORT.size :]
            if not body:
                return []
        if channel == DATA_CHANNEL:
            return [Data(body)]
        return [PortError(bytes(body).decode("utf-8", "replace").strip())]

    @staticmethod
    def data_message(payload: bytes) -> bytes:
        """The WebSocket message that carries `payload` to the pod."""
        return bytes((DATA_CHANNEL,)) + payload

    @staticmethod
    def new_data_message() -> bytearray:
        """A data message to append the payload to (saves `data_message`'s copy)."""
        return bytearray((DATA_CHANNEL,))
