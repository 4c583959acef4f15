"""A Kubernetes port-forward over SPDY/3.1, the client side (what `kubectl port-forward` speaks).

Why a second protocol: the WebSocket port-forward (`core.portforward_websocket`) reaches the
container runtime's WebSocket server, which costs the runtime two to three times the CPU
of its SPDY server per byte (measured with containerd; see benchmarks NOTES). The API
server and the kubelet only splice an upgraded SPDY connection through, so the frames
written here are read by the runtime's `moby/spdystream` server.

Theory of operation. After an HTTP/1.1 upgrade (`upgrade_request`, `parse_upgrade_head`),
one port takes two streams the client opens with SYN_STREAM, both with the headers
`streamtype`, `port` and `requestid`: the error stream (id 1) and the data stream (id 3).
The server answers each with SYN_REPLY; only then does it accept DATA on it (spdystream
drops DATA for a stream it has not replied to), so `ready` waits for both replies. The
client never writes on the error stream and finishes it once it is replied to, as kubectl
does. Bytes then travel as DATA frames on the data stream; the server's text on the error
stream is a failure (e.g. nothing listens on the pod port). The server's PINGs are echoed.
The forward ends once both streams are finished (FIN or RST_STREAM), or at a GOAWAY:
waiting for the error stream too matters, because the runtime may finish the data stream
before it writes why (kubectl waits for both as well).

Frames (all integers big-endian):
- control: 1 bit set, 15-bit version (3), 16-bit type, 8-bit flags, 24-bit length, body;
- data: 1 bit clear, 31-bit stream id, 8-bit flags, 24-bit length, payload.
Header blocks are zlib-compressed with one compression context per direction. The server
decompresses ours with the SPDY dictionary only if our zlib header announces it, so ours
are compressed without one. We read nothing from the server's header blocks, so they are
skipped undecompressed. Flow control (WINDOW_UPDATE, SETTINGS) is ignored, as spdystream
ignores it.

`SpdyPortForward` turns received bytes into events and writes frames; it does no I/O.
Received data is delivered as views into the received bytes, split wherever the reads
split, without waiting for a whole frame.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from kubepresence.userd.core.portforward_websocket import Data, PortError

VERSION = 3
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
PING = 6
GOAWAY = 7
FLAG_FIN = 0x01
MAX_FRAME_LENGTH = (1 << 24) - 1
ERROR_STREAM = 1
DATA_STREAM = 3
HEADER_SIZE = 8
PROTOCOL = "SPDY/3.1"
STREAM_PROTOCOL = "portforward.k8s.io"
# Bodies of control frames are read whole; a server's are tiny (SYN_REPLY, PING, GOAWAY).
MAX_CONTROL_LENGTH = 64 * 1024
_RST_STATUS = {
    1: "protocol error",
    2: "invalid stream",
    3: "refused stream",
    4: "unsupported version",
    5: "cancel",
    6: "internal error",
    7: "flow control error",
    8: "stream in use",
    9: "stream already closed",
    11: "frame too large",
}

_FRAME_HEADER = struct.Struct(">II")
_STREAM_ID = struct.Struct(">I")
_SYN_STREAM_FIELDS = struct.Struct(">IIBB")
_RST_FIELDS = struct.Struct(">II")
_LENGTH = struct.Struct(">I")


class SpdyProtocolError(Exception):
    """The server sent something SPDY/3.1 (as port-forward uses it) does not allow."""


class UpgradeRefused(Exception):  # noqa: N818 - the server's answer, not our failure
    """The server answered the upgrade request with something other than 101."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}".strip())
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Ready:
    """The server replied to both streams: data may flow."""


@dataclass(frozen=True)
class Ended:
    """The server ended the forward (both streams finished, or GOAWAY)."""

    reason: str


Event = Data | PortError | Ready | Ended


def upgrade_request(host: str, path: str, headers: dict[str, str]) -> bytes:
    """The HTTP/1.1 request that upgrades a connection to SPDY for a port-forward."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Connection: Upgrade",
        f"Upgrade: {PROTOCOL}",
        f"X-Stream-Protocol-Version: {STREAM_PROTOCOL}",
        "Content-Length: 0",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class ResponseHead:
    status: int
    reason: str
    headers: dict[str, str]  # names lower-cased

    @property
    def upgraded(self) -> bool:
        return (
            self.status == 101
            and self.headers.get("upgrade", "").lower() == PROTOCOL.lower()
            and self.headers.get("x-stream-protocol-version", "") == STREAM_PROTOCOL
        )


def refusal_message(body: bytes) -> str:
    """What a refused upgrade's body says: the API server's Status message, else the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        status = json.loads(text)
    except ValueError:
        return text[:200]
    message = status.get("message") if isinstance(status, dict) else None
    return str(message) if message else text[:200]


def parse_upgrade_head(head: bytes) -> ResponseHead:
    """The status line and headers of the server's answer (`head` ends before the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise SpdyProtocolError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return ResponseHead(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


class SpdyPortForward:
    """One port forwarded over one SPDY session (client side)."""

    def __init__(self, port: int, request_id: int = 0) -> None:
        self.port = port
        self.request_id = request_id
        self.ended = False
        self._compressor = zlib.compressobj()
        self._replied: set[int] = set()
        self._finished: set[int] = set()
        self._end_reason = "the pod side closed the connection"
        self._output = bytearray()
        # reading state: a frame header being completed, then the frame's body
        self._header = bytearray()
        self._body_left = 0
        self._data_stream = 0  # the stream of the data frame being read, 0 for control
        self._control_type = 0
        self._flags = 0
        self._control = bytearray()
        self._error_text = bytearray()

    @property
    def ready(self) -> bool:
        return len(self._replied) == 2

    # writing
    def opening(self) -> bytes:
        """The frames that open the error stream and the data stream."""
        return self._syn_stream(ERROR_STREAM, "error") + self._syn_stream(DATA_STREAM, "data")

    def _syn_stream(self, stream: int, stream_type: str) -> bytes:
        block = self._header_block(
            {"streamtype": stream_type, "port": str(self.port), "requestid": str(self.request_id)}
        )
        body = _SYN_STREAM_FIELDS.pack(stream, 0, 0, 0) + block
        return _control_header(SYN_STREAM, 0, len(body)) + body

    def _header_block(self, headers: dict[str, str]) -> bytes:
        raw = bytearray(_LENGTH.pack(len(headers)))
        for name, value in headers.items():
            for part in (name.encode("ascii"), value.encode("utf-8")):
                raw += _LENGTH.pack(len(part)) + part
        return self._compressor.compress(bytes(raw)) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def new_data_frame() -> bytearray:
        """A data frame to append the payload to; `seal_data_frame` writes its header."""
        return bytearray(HEADER_SIZE)

    @staticmethod
    def seal_data_frame(frame: bytearray, fin: bool = False) -> bytearray:
        length = len(frame) - HEADER_SIZE
        if length > MAX_FRAME_LENGTH:
            raise ValueError(f"a data frame carries at most {MAX_FRAME_LENGTH} bytes")
        _FRAME_HEADER.pack_into(frame, 0, DATA_STREAM, (FLAG_FIN if fin else 0) << 24 | length)
        return frame

    @staticmethod
    def goodbye() -> bytes:
        """GOAWAY: the client opens nothing more, then closes the connection."""
        return _control_header(GOAWAY, 0, 8) + _RST_FIELDS.pack(0, 0)

    def data_to_send(self) -> bytes:
        """Frames the session owes the server (PING echoes, the error stream's FIN)."""
        if not self._output:  # nearly always: this runs for every read
            return b""
        output = bytes(self._output)
        self._output.clear()
        return output

    # reading
    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        events: list[Event] = []
        view = memoryview(data)
        at, end = 0, len(view)
        while at < end:
            if self._body_left:
                take = min(self._body_left, end - at)
                self._body(view[at : at + take], events)
                at += take
                self._body_left -= take
                if not self._body_left:
                    self._frame_done(events)
                continue
            if self._header or end - at < HEADER_SIZE:
                take = min(HEADER_SIZE - len(self._header), end - at)
                self._header += view[at : at + take]
                at += take
                if len(self._header) < HEADER_SIZE:
                    break
                first, second = _FRAME_HEADER.unpack(self._header)
                self._header.clear()
            else:
                first, second = _FRAME_HEADER.unpack_from(view, at)
                at += HEADER_SIZE
            self._frame_start(first, second)
            if not self._body_left:
                self._frame_done(events)
        return events

    def _frame_start(self, first: int, second: int) -> None:
        self._flags = second >> 24
        self._body_left = second & MAX_FRAME_LENGTH
        if first & 0x80000000:
            version = (first >> 16) & 0x7FFF
            if version != VERSION:
                raise SpdyProtocolError(f"SPDY version {version}, not {VERSION}")
            if self._body_left > MAX_CONTROL_LENGTH:
                raise SpdyProtocolError(f"control frame of {self._body_left} bytes")
            self._data_stream = 0
            self._control_type = first & 0xFFFF
            self._control.clear()
        else:
            self._data_stream = first & 0x7FFFFFFF

    def _body(self, chunk: memoryview, events: list[Event]) -> None:
        if self._data_stream == DATA_STREAM:
            events.append(Data(chunk))
        elif self._data_stream == ERROR_STREAM:
            self._error_text += chunk
        elif self._data_stream == 0:
            self._control += chunk
        # data on any other stream is not ours: dropped

    def _frame_done(self, events: list[Event]) -> None:
        if self._data_stream:
            fin = bool(self._flags & FLAG_FIN)
            if self._data_stream == ERROR_STREAM and self._error_text:
                events.append(PortError(self._error_text.decode("utf-8", "replace").strip()))
                self._error_text.clear()
            if fin:
                self._finish(self._data_stream, events)
            return
        self._control_frame(self._control_type, bytes(self._control), events)

    def _control_frame(self, kind: int, body: bytes, events: list[Event]) -> None:
        if kind == SYN_REPLY:
            stream = self._stream_of(body)
            if stream in (ERROR_STREAM, DATA_STREAM) and stream not in self._replied:
                self._replied.add(stream)
                if stream == ERROR_STREAM:  # we never write on it: finish our side
                    self._output += _FRAME_HEADER.pack(ERROR_STREAM, FLAG_FIN << 24)
                if self.ready:
                    events.append(Ready())
            if stream in (ERROR_STREAM, DATA_STREAM) and self._flags & FLAG_FIN:
                self._finish(stream, events)
        elif kind == RST_STREAM:
            if len(body) < _RST_FIELDS.size:
                raise SpdyProtocolError("RST_STREAM shorter than 8 bytes")
            stream, status = _RST_FIELDS.unpack_from(body)
            stream &= 0x7FFFFFFF
            if stream == DATA_STREAM:
                reason = _RST_STATUS.get(status, f"status {status}")
                self._end_reason = f"the server reset the connection ({reason})"
            if stream in (ERROR_STREAM, DATA_STREAM):
                self._finish(stream, events)
        elif kind == PING:
            if len(body) != 4:
                raise SpdyProtocolError("PING body is not 4 bytes")
            (ping_id,) = _STREAM_ID.unpack(body)
            if ping_id % 2 == 0:  # the server's; ours would be odd, and we send none
                self._output += _control_header(PING, 0, 4) + body
        elif kind == GOAWAY:
            self._end("the server went away", events)
        elif kind == SYN_STREAM:
            # A server-initiated stream is not part of port-forward: refuse it.
            stream = self._stream_of(body)
            self._output += _control_header(RST_STREAM, 0, 8) + _RST_FIELDS.pack(stream, 3)
        # SETTINGS, WINDOW_UPDATE, HEADERS, NOOP: nothing port-forward needs

    @staticmethod
    def _stream_of(body: bytes) -> int:
        if len(body) < _STREAM_ID.size:
            raise SpdyProtocolError("control frame without a stream id")
        return int(_STREAM_ID.unpack_from(body)[0]) & 0x7FFFFFFF

    def _finish(self, stream: int, events: list[Event]) -> None:
        self._finished.add(stream)
        if len(self._finished) == 2:
            self._end(self._end_reason, events)

    def _end(self, reason: str, events: list[Event]) -> None:
        if not self.ended:
            self.ended = True
            events.append(Ended(reason))


def _control_header(kind: int, flags: int, length: int) -> bytes:
    return _FRAME_HEADER.pack(0x80000000 | VERSION << 16 | kind, flags << 24 | length)
