"""Per-request routing of h2c (HTTP/2 cleartext, prior knowledge) connections.

The agent terminates HTTP/2 from the caller (an `h2` server connection) and re-originates
each stream on an HTTP/2 client connection to the stream's destination: `choose(head)`
decides per request, as for HTTP/1.1, and one client connection to each destination is
opened on first use and shared by every stream routed there. Headers, data and trailers
are copied frame by frame in both directions (h2 re-encodes headers; HPACK state is per
connection); interim (1xx) responses pass through; a reset on one side resets the
mapped stream on the other.

Flow control carries backpressure end to end: bytes received on one side are acknowledged
(their window given back) only once they were handed to the other side's connection, so
what the router holds per stream is bounded by the windows it advertises. A destination
that cannot be dialled, or whose connection fails before a stream's response head was
relayed, answers that stream `502`; after the head, the stream is reset. The caller's
connection ending closes every upstream connection. A destination is dialled in line, on
its first stream: the caller's other streams wait for that dial (at most `dial_timeout`).

Not supported: server push (disabled towards upstreams), extended CONNECT (RFC 8441
WebSockets over h2; not advertised, so clients do not try it), and an h2c upgrade from
HTTP/1.1 (`Upgrade: h2c` is passed to the chosen upstream like any other upgrade).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from kubepresence.agent.core.h2c import request_head
from kubepresence.agent.core.http1 import RequestHead

# The same as httprouting's (which imports this module).
Choose = Callable[[RequestHead], str]
OpenUpstream = Callable[[str], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
WINDOW = 1 << 20  # per stream, both towards the caller and towards upstreams
CONNECTION_WINDOW = 1 << 24

Headers = list[tuple[bytes, bytes]]


@dataclass
class _Direction:
    """What one side of a stream still has to send to the other."""

    chunks: deque[tuple[bytes, int]] = field(default_factory=deque)  # data, flow length
    trailers: Headers | None = None
    end: bool = False  # the source ended its side
    ended: bool = False  # ... and that end was passed on


@dataclass
class _Stream:
    down_id: int
    upstream: _Upstream
    up_id: int
    to_up: _Direction = field(default_factory=_Direction)
    to_down: _Direction = field(default_factory=_Direction)
    head_sent: bool = False  # a final response head went to the caller


@dataclass
class _Upstream:
    destination: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: h2.connection.H2Connection
    streams: dict[int, _Stream] = field(default_factory=dict)  # by upstream stream id
    usable: bool = True  # takes new streams (no GOAWAY, not failed)


def _connection(client_side: bool) -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    settings: dict[h2.settings.SettingCodes | int, int] = {
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW
    }
    if client_side:
        settings[h2.settings.SettingCodes.ENABLE_PUSH] = 0
    conn.update_settings(settings)
    conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
    return conn


class H2Router:
    """One caller's h2c connection, routed stream by stream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        choose: Choose,
        open_upstream: OpenUpstream,
        dial_timeout: float,
    ) -> None:
        self.reader, self.writer = reader, writer
        self.choose, self.open_upstream = choose, open_upstream
        self.dial_timeout = dial_timeout
        self.down = _connection(client_side=False)
        self.streams: dict[int, _Stream] = {}  # by caller stream id
        self.pool: dict[str, _Upstream] = {}
        self.upstreams: list[_Upstream] = []
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self, first: bytes) -> None:
        """Serve the connection whose first bytes (preface included) were `first`."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                data = first
                while data:
                    try:
                        events = self.down.receive_data(data)
                    except h2.exceptions.ProtocolError as error:
                        log.info("h2c caller broke the protocol: %s", error)
                        break
                    if not await self._on_caller_events(events):
                        break
                    await self._send()
                    data = await self.reader.read(READ_SIZE)
                await self._send()
                for task in self._tasks:
                    task.cancel()
        finally:
            for upstream in self.upstreams:
                upstream.writer.close()

    async def _send(self) -> None:
        """Hand every connection's pending frames to its socket."""
        if data := self.down.data_to_send():
            self.writer.write(data)
        for upstream in self.upstreams:
            if (data := upstream.conn.data_to_send()) and not upstream.writer.is_closing():
                upstream.writer.write(data)
        await self.writer.drain()
        for upstream in self.upstreams:
            if not upstream.writer.is_closing():
                try:
                    await upstream.writer.drain()
                except OSError as error:
                    self._upstream_failed(upstream, f"connection failed: {error}")

    # -- caller → upstreams ------------------------------------------------------------

    async def _on_caller_events(self, events: list[h2.events.Event]) -> bool:
        """False when the caller ended the connection."""
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                await self._on_request(event)
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id or 0)
                if stream is None:
                    self._ack(self.down, event.stream_id, event.flow_controlled_length)
                elif event.data:
                    stream.to_up.chunks.append((event.data, event.flow_controlled_length or 0))
                    self._flush_up(stream)
            elif isinstance(event, h2.events.TrailersReceived):
                stream = self.streams.get(event.stream_id or 0)
                if stream is not None:
                    stream.to_up.trailers = list(event.headers or [])
            elif isinstance(event, h2.events.StreamEnded):
                stream = self.streams.get(event.stream_id or 0)
                if stream is not None:
                    stream.to_up.end = True
                    self._flush_up(stream)
            elif isinstance(event, h2.events.StreamReset):
                stream = self.streams.get(event.stream_id or 0)
                if stream is not None:
                    self._guard(stream.upstream.conn.reset_stream, stream.up_id, event.error_code)
                    self._forget(stream)
            elif isinstance(event, h2.events.WindowUpdated):
                if event.stream_id:
                    stream = self.streams.get(event.stream_id)
                    targets = [stream] if stream is not None else []
                else:
                    targets = list(self.streams.values())
                for target in targets:
                    self._flush_down(target)
            elif isinstance(event, h2.events.ConnectionTerminated):
                return False
        return True

    async def _on_request(self, event: h2.events.RequestReceived) -> None:
        assert event.stream_id is not None
        headers: Headers = list(event.headers or [])
        head = request_head(headers)
        destination = self.choose(head)
        ended = event.stream_ended is not None
        upstream = await self._upstream_for(destination)
        if upstream is None:
            self._answer_502(event.stream_id, f"{destination} does not answer", ended)
            return
        up_id = upstream.conn.get_next_available_stream_id()
        upstream.conn.send_headers(up_id, headers, end_stream=ended)
        stream = _Stream(event.stream_id, upstream, up_id)
        stream.to_up.end = stream.to_up.ended = ended
        self.streams[event.stream_id] = stream
        upstream.streams[up_id] = stream
        log.debug("h2c stream %d → %s", event.stream_id, destination)

    async def _upstream_for(self, destination: str) -> _Upstream | None:
        upstream = self.pool.get(destination)
        if upstream is not None and upstream.usable:
            return upstream
        try:
            async with asyncio.timeout(self.dial_timeout):
                reader, writer = await self.open_upstream(destination)
        except (OSError, TimeoutError) as error:
            log.info("%s does not answer: %s", destination, error)
            return None
        upstream = _Upstream(destination, reader, writer, _connection(client_side=True))
        self.pool[destination] = upstream
        self.upstreams.append(upstream)
        assert self._group is not None
        self._tasks.append(
            self._group.create_task(self._read_upstream(upstream), name=f"h2-{destination}")
        )
        return upstream

    def _answer_502(self, down_id: int, text: str, request_ended: bool) -> None:
        body = f"kubepresence agent: {text}\n".encode()
        headers = [
            (b":status", b"502"),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        if self._guard(self.down.send_headers, down_id, headers):
            self._guard(self.down.send_data, down_id, body, end_stream=True)
            if not request_ended:  # the rest of the request is not wanted (RFC 9113 §8.1)
                self._guard(self.down.reset_stream, down_id, ErrorCodes.NO_ERROR)

    # -- upstreams → caller ------------------------------------------------------------

    async def _read_upstream(self, upstream: _Upstream) -> None:
        reason = "closed the connection"
        try:
            while data := await upstream.reader.read(READ_SIZE):
                events = upstream.conn.receive_data(data)
                for event in events:
                    self._on_upstream_event(upstream, event)
                await self._send()
        except (OSError, h2.exceptions.ProtocolError) as error:
            reason = f"connection failed: {error}"
        self._upstream_failed(upstream, reason)
        with contextlib.suppress(OSError):  # the caller went too
            await self._send()

    def _on_upstream_event(self, upstream: _Upstream, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        stream = upstream.streams.get(stream_id or 0)
        if isinstance(event, h2.events.WindowUpdated):
            targets = list(upstream.streams.values()) if not stream_id else [stream]
            for target in targets:
                if target is not None:
                    self._flush_up(target)
        elif isinstance(event, h2.events.ConnectionTerminated):
            upstream.usable = False
            last = event.last_stream_id or 0
            for up_id, lost in list(upstream.streams.items()):
                if up_id > last:
                    self._fail(lost, "refused the stream (GOAWAY)")
        elif stream is None:
            if isinstance(event, h2.events.DataReceived):
                self._ack(upstream.conn, stream_id, event.flow_controlled_length)
        elif isinstance(
            event,
            h2.events.ResponseReceived | h2.events.InformationalResponseReceived,
        ):
            final = isinstance(event, h2.events.ResponseReceived)
            ended = isinstance(event, h2.events.ResponseReceived) and event.stream_ended is not None
            headers: Headers = list(event.headers or [])
            if self._guard(self.down.send_headers, stream.down_id, headers, end_stream=ended):
                stream.head_sent = stream.head_sent or final
                stream.to_down.end = stream.to_down.ended = ended
                self._maybe_done(stream)
        elif isinstance(event, h2.events.DataReceived):
            if event.data:
                stream.to_down.chunks.append((event.data, event.flow_controlled_length or 0))
            self._flush_down(stream)
        elif isinstance(event, h2.events.TrailersReceived):
            stream.to_down.trailers = list(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded):
            stream.to_down.end = True
            self._flush_down(stream)
        elif isinstance(event, h2.events.StreamReset):
            self._guard(self.down.reset_stream, stream.down_id, event.error_code)
            self._forget(stream)

    def _upstream_failed(self, upstream: _Upstream, reason: str) -> None:
        upstream.usable = False
        if self.pool.get(upstream.destination) is upstream:
            del self.pool[upstream.destination]
        for stream in list(upstream.streams.values()):
            self._fail(stream, reason)
        upstream.writer.close()

    def _fail(self, stream: _Stream, reason: str) -> None:
        if stream.head_sent:
            self._guard(self.down.reset_stream, stream.down_id, ErrorCodes.INTERNAL_ERROR)
        else:
            self._answer_502(
                stream.down_id, f"{stream.upstream.destination}: {reason}", stream.to_up.end
            )
        self._forget(stream)

    # -- moving bytes within the windows -------------------------------------------------

    def _flush_up(self, stream: _Stream) -> None:
        self._flush(stream, stream.to_up, stream.upstream.conn, stream.up_id, self.down, True)

    def _flush_down(self, stream: _Stream) -> None:
        source = stream.upstream.conn
        self._flush(stream, stream.to_down, self.down, stream.down_id, source, False)

    def _flush(
        self,
        stream: _Stream,
        pending: _Direction,
        conn: h2.connection.H2Connection,
        stream_id: int,
        source: h2.connection.H2Connection,
        upwards: bool,
    ) -> None:
        source_id = stream.down_id if upwards else stream.up_id
        try:
            while pending.chunks:
                data, flow = pending.chunks[0]
                window = min(
                    conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size
                )
                if window <= 0:
                    return
                if len(data) > window:
                    conn.send_data(stream_id, data[:window])
                    pending.chunks[0] = (data[window:], flow)
                    continue
                conn.send_data(stream_id, data)
                pending.chunks.popleft()
                self._ack(source, source_id, flow)
            if pending.end and not pending.ended:
                if pending.trailers is not None:
                    conn.send_headers(stream_id, pending.trailers, end_stream=True)
                else:
                    conn.end_stream(stream_id)
                pending.ended = True
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as error:
            log.debug("h2c stream %d: %s", stream.down_id, error)
            self._forget(stream)
            return
        self._maybe_done(stream)

    def _maybe_done(self, stream: _Stream) -> None:
        if stream.to_up.ended and stream.to_down.ended:
            self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        for direction, source, source_id in (
            (stream.to_up, self.down, stream.down_id),
            (stream.to_down, stream.upstream.conn, stream.up_id),
        ):
            for _, flow in direction.chunks:  # give back the window of what is dropped
                self._ack(source, source_id, flow)
            direction.chunks.clear()
        self.streams.pop(stream.down_id, None)
        stream.upstream.streams.pop(stream.up_id, None)

    @staticmethod
    def _ack(conn: h2.connection.H2Connection, stream_id: int | None, flow: int | None) -> None:
        if stream_id and flow:
            with contextlib.suppress(h2.exceptions.ProtocolError):  # the connection is ending
                conn.acknowledge_received_data(flow, stream_id)

    @staticmethod
    def _guard(action: Callable[..., object], *args: object, **kwargs: object) -> bool:
        """Run an h2 call on a stream that may have closed meanwhile; whether it worked."""
        try:
            action(*args, **kwargs)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as error:
            log.debug("h2c: %s", error)
            return False
        return True
