"""Per-request routing of one inbound connection on an HTTP-filtered port.

`route_http` owns an accepted connection (it closes it when done). It first classifies
the connection by its first bytes:

- HTTP/1.x: every request is routed on its own. `choose(head)` names the destination
  ("app", or an intercept id); the router reuses an open keep-alive connection to that
  destination or opens one with `open_upstream(destination)`, forwards the request's raw
  bytes (head, then the body as it streams in), and relays that upstream's response until
  its end, then takes the next request. Requests are handled strictly in order, so
  pipelined requests work and their responses stay in order; one keep-alive connection can
  alternate destinations request by request. Interim responses (100 Continue for
  `Expect: 100-continue`, 103) reach the caller as they come. A 101 (WebSocket) or a 2xx to
  CONNECT turns the connection into a raw two-way pipe with the upstream that answered.
  After a response that ends the connection (close-delimited, `Connection: close`, HTTP/1.0)
  or a request that asked to close, the caller's connection is closed. A response that ends
  before its request's body was all forwarded also closes the caller's connection (the rest
  of that body cannot be told apart from a next request otherwise).
- h2c (prior-knowledge preface): every stream is routed on its own, the same way; see
  `h2routing.py`.
- Anything else: piped raw to "app", both ways, half-close respected.

A client that connects and says nothing for `sniff_timeout` seconds may be speaking a
protocol where the server speaks first; the router then dials the app and pipes raw as soon
as the *app* says something, while still listening to the client: if the client's bytes
come first, classification goes on and the early app connection becomes the pooled "app"
upstream of the HTTP router.

A kept-alive upstream connection that turns out closed when a request is sent on it (the
upstream's idle timeout raced the request) is replaced once, and the request sent again,
if it is safe (GET, HEAD, OPTIONS, TRACE), had no body and nothing was answered yet.

Failures: an upstream that cannot be dialled within `dial_timeout`, closes, or sends
something unparseable gets the caller a `502 Bad Gateway` (then a close) if no final
response head had been relayed yet; otherwise the caller's connection is closed. A
malformed request gets a `400 Bad Request` and a close. Every upstream closes when the
caller's connection ends. As in the plain pass-through (forwarding.py), waits on the
caller and on upstreams have no idle timeout of their own (long polls and websockets are
legitimate): TCP keep-alive on the sockets finds dead peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kubepresence.agent.core.http1 import (
    NEED_DATA,
    Body,
    Closed,
    EndOfMessage,
    Event,
    NeedData,
    ParseError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    Switched,
    Verdict,
    is_h2c_preface,
    looks_like_http1,
)
from kubepresence.agent.net.h2routing import H2Router

log = logging.getLogger(__name__)

Destination = str
APP: Destination = "app"
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Choose = Callable[[RequestHead], Destination]
OpenUpstream = Callable[[Destination], Awaitable[Streams]]

READ_SIZE = 64 * 1024
DIAL_TIMEOUT = 5.0
SNIFF_TIMEOUT = 1.0
# Bounds a connection's event loop: a parser that neither yields nor asks would spin.
MAX_EVENTS_PER_READ = 100_000
# Requests sent again when a kept-alive connection turns out closed (RFC 9110 §9.2.1-2).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class _UpstreamFailedError(Exception):
    pass


@dataclass
class _Upstream:
    destination: Destination
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parser: ResponseParser = field(default_factory=ResponseParser)

    def close(self) -> None:
        self.writer.close()


async def route_http(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    choose: Choose,
    open_upstream: OpenUpstream,
    sniff_timeout: float = SNIFF_TIMEOUT,
    dial_timeout: float = DIAL_TIMEOUT,
    on_not_http: Callable[[], None] | None = None,
) -> None:
    """Serve one accepted connection until it ends; see the module docstring.

    `on_not_http` is told when the connection turns out not to speak HTTP (it goes to
    the app whatever the filters say: the agent lets the intercepts' owners know)."""
    router = _Router(reader, writer, choose, open_upstream, dial_timeout, on_not_http)
    peer = writer.get_extra_info("peername")
    try:
        await router.run(sniff_timeout)
    except OSError as error:
        log.debug("connection from %s ended: %s", peer, error)
    finally:
        router.close()


class _Router:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        choose: Choose,
        open_upstream: OpenUpstream,
        dial_timeout: float,
        on_not_http: Callable[[], None] | None = None,
    ) -> None:
        self.reader, self.writer = reader, writer
        self.choose, self.open_upstream = choose, open_upstream
        self.on_not_http = on_not_http
        self.dial_timeout = dial_timeout
        self.pool: dict[Destination, _Upstream] = {}

    def close(self) -> None:
        for upstream in self.pool.values():
            upstream.close()
        self.pool.clear()
        self.writer.close()

    # -- classification ----------------------------------------------------------------

    async def run(self, sniff_timeout: float) -> None:
        first = b""
        early: _Upstream | None = None  # the app, dialled when the client stays silent
        patient = False  # the app could not be dialled early: just wait for the client
        while True:
            h2 = is_h2c_preface(first)
            h1 = looks_like_http1(first)
            if h2 is Verdict.YES:
                await self._h2c(first, early)
                return
            if h1 is Verdict.YES:
                if early is not None:
                    self.pool[APP] = early
                await self._http1(first)
                return
            if h2 is Verdict.NO and h1 is Verdict.NO:
                log.debug("not HTTP: piping raw to the app")
                if self.on_not_http is not None:
                    self.on_not_http()
                await self._raw_to(APP, first, early)
                return
            if early is not None:
                data, app_data = await self._first_speaker(early)
                if app_data is not None:
                    log.debug("the app spoke first: piping raw")
                    if self.on_not_http is not None:
                        self.on_not_http()
                    self.writer.write(app_data)
                    await self._raw_to(APP, first + data, early)
                    return
            elif patient:
                data = await self.reader.read(READ_SIZE)
            else:
                try:
                    async with asyncio.timeout(sniff_timeout):
                        data = await self.reader.read(READ_SIZE)
                except TimeoutError:
                    early = await self._dial_or_none(APP)
                    patient = early is None
                    continue
            if not data:
                if first:
                    await self._raw_to(APP, first, early)
                return
            first += data

    async def _first_speaker(self, early: _Upstream) -> tuple[bytes, bytes | None]:
        """(client bytes, app bytes or None) from whichever side speaks first."""
        async with asyncio.TaskGroup() as group:
            client = group.create_task(self.reader.read(READ_SIZE), name="sniff-client")
            app = group.create_task(early.reader.read(READ_SIZE), name="sniff-app")
            done, _ = await asyncio.wait({client, app}, return_when=asyncio.FIRST_COMPLETED)
            # A read cancelled before it returned consumed nothing; one that returned
            # anyway (both at once) is kept.
            (app if client in done else client).cancel()
        return (
            b"" if client.cancelled() else client.result(),
            None if app.cancelled() else app.result(),
        )

    async def _dial_or_none(self, destination: Destination) -> _Upstream | None:
        try:
            async with asyncio.timeout(self.dial_timeout):
                up_reader, up_writer = await self.open_upstream(destination)
        except (OSError, TimeoutError) as error:
            log.info("%s does not answer: %s", destination, error)
            return None
        return _Upstream(destination, up_reader, up_writer)

    # -- raw pipes ---------------------------------------------------------------------

    async def _raw_to(
        self, destination: Destination, first: bytes, upstream: _Upstream | None
    ) -> None:
        if upstream is None:
            upstream = await self._dial_or_none(destination)
            if upstream is None:
                return
        self.pool[f"raw:{destination}"] = upstream
        upstream.writer.write(first)
        await self._pipe(b"", upstream)

    async def _pipe(self, to_caller: bytes, upstream: _Upstream) -> None:
        """Raw both ways until both directions ended; `to_caller` goes first."""
        if to_caller:
            self.writer.write(to_caller)
        async with asyncio.TaskGroup() as group:
            group.create_task(_copy(self.reader, upstream.writer), name="pipe-up")
            group.create_task(_copy(upstream.reader, self.writer), name="pipe-down")

    # -- h2c ---------------------------------------------------------------------------

    async def _h2c(self, first: bytes, early: _Upstream | None) -> None:
        if early is not None:
            early.close()  # h2 upstream connections start with their own preface
        router = H2Router(
            self.reader, self.writer, self.choose, self.open_upstream, self.dial_timeout
        )
        await router.run(first)

    # -- HTTP/1 ------------------------------------------------------------------------

    async def _http1(self, first: bytes) -> None:
        parser = RequestParser()
        parser.feed(first)
        while True:
            event = await self._next_request_event(parser)
            if isinstance(event, Closed):
                return
            if isinstance(event, ParseError):
                log.info("malformed request: %s", event.reason)
                await self._answer(400, "Bad Request", f"malformed request: {event.reason}")
                return
            if not isinstance(event, RequestHead):
                raise AssertionError(f"request parser gave {event!r} between requests")
            head = event
            destination = self.choose(head)
            reused = destination in self.pool
            upstream = await self._upstream_for(destination)
            if upstream is None:
                await self._answer(502, "Bad Gateway", f"{destination} does not answer")
                return
            upstream.parser.expect(head.method)
            upstream.writer.write(head.raw)
            exchange = _Exchange(self.reader, self.writer, parser, upstream)
            await exchange.run()
            if reused and exchange.retryable(head):
                # The kept-alive connection was closed by the upstream as the request went
                # out: nothing was answered, so a safe request without a body goes again,
                # once, on a new connection.
                log.debug("%s closed a kept-alive connection: retrying %s", destination, head)
                self._drop(upstream)
                upstream = await self._upstream_for(destination)
                if upstream is None:
                    await self._answer(502, "Bad Gateway", f"{destination} does not answer")
                    return
                upstream.parser.expect(head.method)
                upstream.writer.write(head.raw)
                exchange = _Exchange(self.reader, self.writer, parser, upstream)
                await exchange.run_response_only()
            if exchange.upstream_failed is not None:
                self._drop(upstream)
                if not exchange.final_sent:
                    await self._answer(
                        502, "Bad Gateway", f"{destination}: {exchange.upstream_failed}"
                    )
                return
            if exchange.caller_gone:
                return
            if exchange.switched:
                await self._pipe(upstream.parser.take_buffered(), upstream)
                return
            if not exchange.response_keep_alive:
                self._drop(upstream)
                return
            if not head.keep_alive or exchange.body_left_behind:
                return

    async def _next_request_event(
        self, parser: RequestParser
    ) -> RequestHead | Closed | ParseError | EndOfMessage | Body | Switched:
        for _ in range(MAX_EVENTS_PER_READ):
            event = parser.next_event()
            if event is not NEED_DATA:
                assert not isinstance(event, ResponseHead)
                return event
            data = await self.reader.read(READ_SIZE)
            if data:
                parser.feed(data)
            else:
                parser.feed_eof()
        raise AssertionError("request parser made no progress")

    async def _upstream_for(self, destination: Destination) -> _Upstream | None:
        upstream = self.pool.get(destination)
        if upstream is not None and (
            upstream.reader.at_eof() or upstream.writer.is_closing() or upstream.parser.buffered
        ):
            self._drop(upstream)  # closed (or spoke) while idle
            upstream = None
        if upstream is None:
            upstream = await self._dial_or_none(destination)
            if upstream is not None:
                self.pool[destination] = upstream
        return upstream

    def _drop(self, upstream: _Upstream) -> None:
        upstream.close()
        if self.pool.get(upstream.destination) is upstream:
            del self.pool[upstream.destination]

    async def _answer(self, status: int, reason: str, text: str) -> None:
        """A response of the router's own, after which the connection closes."""
        body = f"kubepresence agent: {text}\n".encode()
        self.writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(OSError):
            await self.writer.drain()


class _Exchange:
    """One request forwarded and its response relayed, both directions at once."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        requests: RequestParser,
        upstream: _Upstream,
    ) -> None:
        self.reader, self.writer = reader, writer
        self.requests, self.upstream = requests, upstream
        self.final_sent = False  # a final response head went to the caller
        self.switched = False
        self.response_keep_alive = False
        self.body_left_behind = False
        self.caller_gone = False
        self.upstream_failed: str | None = None
        self.had_body = False
        self.answered = False  # something (even a 1xx) went to the caller
        self._pending: Event | NeedData | None = None  # pulled by run(), not yet handled

    def retryable(self, head: RequestHead) -> bool:
        """The upstream failed before answering a safe request that had no body."""
        return (
            self.upstream_failed is not None
            and not self.had_body
            and not self.answered
            and head.method in SAFE_METHODS
        )

    async def run_response_only(self) -> None:
        """For a request sent again: its body (none) was taken from the caller already."""
        await self._relay_response()

    async def run(self) -> None:
        # Fast path: a request without a body has ended already; only the response is left.
        self._pending = self.requests.next_event()
        if isinstance(self._pending, EndOfMessage):
            await self._relay_response()
            return
        self.had_body = True
        async with asyncio.TaskGroup() as group:
            send = group.create_task(self._send_body(), name="request-body")
            relay = group.create_task(self._relay_response(), name="response")
            done, _ = await asyncio.wait({send, relay}, return_when=asyncio.FIRST_COMPLETED)
            if send in done and self.caller_gone:
                relay.cancel()  # nobody to answer
            elif relay in done and not send.done():
                if not self.switched and not self.caller_gone:
                    self.body_left_behind = True
                send.cancel()

    async def _send_body(self) -> None:
        """The request's body, caller → upstream, up to its end."""
        upstream_open = True
        for _ in range(MAX_EVENTS_PER_READ):
            event, self._pending = self._pending or self.requests.next_event(), None
            if event is NEED_DATA:
                try:
                    data = await self.reader.read(READ_SIZE)
                except OSError:
                    self.caller_gone = True
                    return
                if data:
                    self.requests.feed(data)
                else:
                    self.requests.feed_eof()
            elif isinstance(event, Body):
                if upstream_open:
                    try:
                        self.upstream.writer.write(event.data)
                        await self.upstream.writer.drain()
                    except OSError:
                        # The upstream stopped reading: its response (if any) still counts.
                        upstream_open = False
            elif isinstance(event, EndOfMessage):
                return
            else:  # ParseError (or EOF) in the middle of a request body
                self.caller_gone = True
                return
        self.caller_gone = True

    async def _relay_response(self) -> None:
        """The upstream's response, upstream → caller, up to its end."""
        parser = self.upstream.parser
        try:
            for _ in range(MAX_EVENTS_PER_READ):
                event = parser.next_event()
                if event is NEED_DATA:
                    data = await self.upstream.reader.read(READ_SIZE)
                    if data:
                        parser.feed(data)
                    else:
                        parser.feed_eof()
                    continue
                if isinstance(event, ResponseHead):
                    self.answered = True
                    self.final_sent = self.final_sent or not event.interim
                    self.response_keep_alive = event.keep_alive
                    await self._to_caller(event.raw)
                elif isinstance(event, Body):
                    await self._to_caller(event.data)
                elif isinstance(event, EndOfMessage):
                    return
                elif isinstance(event, Switched):
                    self.switched = True
                    return
                elif isinstance(event, Closed):
                    raise _UpstreamFailedError("closed the connection without a response")
                elif isinstance(event, ParseError):
                    raise _UpstreamFailedError(f"sent a malformed response: {event.reason}")
            raise _UpstreamFailedError("response parser made no progress")
        except _UpstreamFailedError as error:
            self.upstream_failed = str(error)
        except OSError as error:
            if self.caller_gone:
                return
            self.upstream_failed = f"connection failed: {error}"

    async def _to_caller(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError:
            self.caller_gone = True
            raise


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes one way until EOF, then a half-close; errors end this direction only."""
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
    except OSError:
        writer.close()
