"""The first request of an HTTP/2 cleartext (prior knowledge) connection, read sans-IO.

The agent routes an h2c connection *as a whole*, by the headers of its first request: it
buffers the client preface, skips the frames a client sends before its first request
(SETTINGS, WINDOW_UPDATE, PRIORITY, PING), decodes the first HEADERS block (with its
CONTINUATION frames) with a fresh HPACK decoder (the first block is decoded against an
empty dynamic table, exactly as the real server will decode it), and then forwards every
buffered byte unchanged to the chosen destination. Later requests on the same connection
go to the same destination: per-request routing of h2 (terminating h2 and re-originating
streams per destination) is not built. Clients open a connection per origin and reuse
it, so a workstation that wants its requests must send its header on the connection's
first request too; an h2c client mixing requests for two intercepts on one connection gets
them all routed by the first.
"""

from __future__ import annotations

from hpack import Decoder
from hpack.exceptions import HPACKError

from kubepresence.agent.core.http1 import (
    H2_PREFACE,
    MAX_HEAD,
    NEED_DATA,
    NeedData,
    ParseError,
    RequestHead,
)

_HEADERS, _CONTINUATION, _DATA = 0x1, 0x9, 0x0
_END_HEADERS, _PADDED, _PRIORITY = 0x4, 0x8, 0x20


def first_request(data: bytes, limit: int = MAX_HEAD) -> RequestHead | NeedData | ParseError:
    """The head of the first request in the bytes an h2c client sent so far.

    `data` starts with the connection preface. NEED_DATA while the first header block is
    incomplete; a ParseError when the bytes are not what a client sends first.
    """
    if not data.startswith(H2_PREFACE):
        return ParseError("not an HTTP/2 connection preface")
    pos = len(H2_PREFACE)
    block = bytearray()
    stream = 0
    while True:
        if pos > limit:
            return ParseError(f"no complete HTTP/2 request head in the first {limit} bytes")
        if len(data) < pos + 9:
            return NEED_DATA
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        stream_id = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFF_FFFF
        if pos + 9 + length > limit + 9:
            return ParseError(f"no complete HTTP/2 request head in the first {limit} bytes")
        if len(data) < pos + 9 + length:
            return NEED_DATA
        payload = data[pos + 9 : pos + 9 + length]
        pos += 9 + length
        if stream == 0:
            if kind == _HEADERS:
                fragment = _headers_fragment(payload, flags)
                if fragment is None or stream_id == 0:
                    return ParseError("malformed HTTP/2 HEADERS frame")
                block += fragment
                stream = stream_id
            elif kind in (_CONTINUATION, _DATA):
                return ParseError("HTTP/2 request data before any HEADERS frame")
            else:
                continue  # connection-level frames before the first request
        elif kind == _CONTINUATION and stream_id == stream:
            block += payload
        else:
            return ParseError("HTTP/2 header block interrupted by another frame")
        if flags & _END_HEADERS:
            return _head(bytes(block))


def _headers_fragment(payload: bytes, flags: int) -> bytes | None:
    start, end = 0, len(payload)
    if flags & _PADDED:
        if not payload:
            return None
        start, end = 1, len(payload) - payload[0]
    if flags & _PRIORITY:
        start += 5
    return payload[start:end] if start <= end else None


def _head(block: bytes) -> RequestHead | ParseError:
    decoder = Decoder()
    try:
        fields = decoder.decode(block, raw=True)
    except HPACKError as error:
        return ParseError(f"undecodable HTTP/2 header block: {error}")
    pseudo: dict[str, str] = {}
    headers: list[tuple[str, str]] = []
    for raw_name, raw_value in fields:
        name = bytes(raw_name).decode("latin-1").lower()
        value = bytes(raw_value).decode("latin-1")
        if name.startswith(":"):
            pseudo[name] = value
        else:
            headers.append((name, value))
    if ":method" not in pseudo:
        return ParseError("HTTP/2 request without :method")
    if ":authority" in pseudo and not any(name == "host" for name, _ in headers):
        headers.insert(0, ("host", pseudo[":authority"]))
    return RequestHead(
        method=pseudo[":method"],
        target=pseudo.get(":path", "*"),
        version="HTTP/2",
        headers=tuple(headers),
        raw=b"",
        upgrade=pseudo[":method"] == "CONNECT",
    )
