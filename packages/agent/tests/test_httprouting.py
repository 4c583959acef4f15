"""Per-request HTTP routing through real loopback sockets.

Two real HTTP servers (aiohttp) stand for the app container and the workstation; a
router in front of them sends requests carrying `x-dev: alice` to the workstation and
everything else to the app. Scenarios:
- one keep-alive connection alternating the header is routed per request, and each
  destination is dialled once (its connection is reused);
- pipelined requests come back in order, from the right sides;
- chunked request and response bodies pass through unchanged;
- a 50 MiB body streams through without being held in memory;
- Expect: 100-continue: the upstream's 100 reaches the client before it sends the body;
- HEAD (no body despite Content-Length) keeps the connection usable;
- a WebSocket upgrade is piped raw to the side that answered 101;
- non-HTTP bytes go to the app, half-close included; a server-speaks-first protocol
  works although the client says nothing;
- an upstream that refuses gives 502; one that dies mid-response closes the connection;
  a close-delimited response closes the connection after it; a malformed request gets 400;
- h2c with prior knowledge is routed per stream: alternating headers, concurrent streams
  with a 3 MiB upload and a 500 kB download (flow control both ways), 502 per stream.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import h2.config
import h2.connection
import h2.events
import pytest
from aiohttp import web
from kptest.waiting import eventually

from kubepresence.agent.core.http1 import (
    NEED_DATA,
    Body,
    EndOfMessage,
    RequestHead,
    ResponseHead,
    ResponseParser,
)
from kubepresence.agent.net.httprouting import APP, route_http

TIMEOUT = 10.0
WS = "workstation"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def choose_by_header(head: RequestHead) -> str:
    return WS if head.header("x-dev") == "alice" else APP


def make_app(name: str) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/ws":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                await ws.send_str(f"{name}:{message.data}")
            return ws
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        text = (
            f"{name} {request.method} {request.path_qs} x-dev={request.headers.get('x-dev', '')}"
            f" n={size} sha={digest.hexdigest()[:16]}"
        )
        if request.path == "/chunked":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for part in (text, "|part two", "|part three"):
                await response.write(part.encode())
            await response.write_eof()
            return response
        return web.Response(text=text)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Setup:
    router_port: int
    ports: dict[str, int]
    dials: dict[str, int] = field(default_factory=dict)
    sniff_timeout: float = 1.0
    ended: asyncio.Queue[None] = field(default_factory=asyncio.Queue)
    not_http: int = 0  # connections the router found were not HTTP

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.router_port)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    runners = []
    ports: dict[str, int] = {}
    for name in (APP, WS):
        runner = web.AppRunner(make_app(name))
        await runner.setup()
        sock = listening_socket()
        await web.SockSite(runner, sock).start()
        ports[name] = int(sock.getsockname()[1])
        runners.append(runner)
    setup = Setup(0, ports)

    async def open_upstream(
        destination: str,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        setup.dials[destination] = setup.dials.get(destination, 0) + 1
        return await asyncio.open_connection("127.0.0.1", setup.ports[destination])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await route_http(
            reader,
            writer,
            choose=choose_by_header,
            open_upstream=open_upstream,
            sniff_timeout=setup.sniff_timeout,
            on_not_http=lambda: setattr(setup, "not_http", setup.not_http + 1),
        )
        setup.ended.put_nowait(None)

    router = await asyncio.start_server(serve, "127.0.0.1", 0)
    setup.router_port = int(router.sockets[0].getsockname()[1])
    try:
        async with asyncio.timeout(TIMEOUT * 3):
            yield setup
    finally:
        router.close()
        for runner in runners:
            await runner.cleanup()


async def read_response(
    reader: asyncio.StreamReader, parser: ResponseParser
) -> tuple[ResponseHead, bytes]:
    """One final response (interim ones skipped): its head and raw body."""
    head: ResponseHead | None = None
    body = b""
    async with asyncio.timeout(TIMEOUT):
        for _ in range(100_000):
            event = parser.next_event()
            if event is NEED_DATA:
                data = await reader.read(65536)
                if data:
                    parser.feed(data)
                else:
                    parser.feed_eof()
            elif isinstance(event, ResponseHead):
                if not event.interim:
                    head = event
            elif isinstance(event, Body):
                body += event.data
            elif isinstance(event, EndOfMessage):
                assert head is not None
                return head, body
            else:
                raise AssertionError(f"unexpected {event!r}")
    raise AssertionError("no response")


def get(path: str, dev: str = "", method: str = "GET", extra: str = "") -> bytes:
    dev_line = f"X-Dev: {dev}\r\n" if dev else ""
    return f"{method} {path} HTTP/1.1\r\nHost: svc\r\n{dev_line}{extra}\r\n".encode()


async def test_keep_alive_connection_alternates_destinations(setup: Setup) -> None:
    reader, writer = await setup.connect()
    parser = ResponseParser()
    seen = []
    for i, dev in enumerate(["alice", "", "alice", "bob", ""]):
        writer.write(get(f"/r{i}", dev))
        parser.expect("GET")
        head, body = await read_response(reader, parser)
        assert head.status == 200
        seen.append(body.decode().split()[0])
    assert seen == [WS, APP, WS, APP, APP]
    assert setup.dials == {WS: 1, APP: 1}  # each upstream connection was reused
    assert setup.not_http == 0
    writer.close()


async def test_pipelined_requests_answer_in_order(setup: Setup) -> None:
    reader, writer = await setup.connect()
    devs = ["alice", "", "", "alice", "alice", ""]
    writer.write(b"".join(get(f"/p{i}", dev) for i, dev in enumerate(devs)))
    parser = ResponseParser()
    for i, dev in enumerate(devs):
        parser.expect("GET")
        _, body = await read_response(reader, parser)
        name, _, path, *_ = body.decode().split()
        assert (name, path) == (WS if dev else APP, f"/p{i}")
    writer.close()


async def test_chunked_request_and_response(setup: Setup) -> None:
    reader, writer = await setup.connect()
    payload = b"hello chunked world"
    writer.write(
        get("/chunked", "alice", "POST", "Transfer-Encoding: chunked\r\n")
        + b"5\r\nhello\r\n"
        + b"e;ext=x\r\n chunked world\r\n"
        + b"0\r\nX-Trailer: t\r\n\r\n"
    )
    parser = ResponseParser()
    parser.expect("POST")
    head, body = await read_response(reader, parser)
    assert ("transfer-encoding", "chunked") in head.headers
    expected = f"n={len(payload)} sha={hashlib.sha256(payload).hexdigest()[:16]}"
    assert body.startswith(b"%x\r\n" % (len(body.split(b"\r\n")[1])))  # chunk framing kept
    decoded = b"".join(body.split(b"\r\n")[1::2])
    assert decoded.startswith(f"{WS} POST /chunked x-dev=alice {expected}".encode())
    assert decoded.endswith(b"|part two|part three")
    # The connection is still usable after a chunked exchange.
    writer.write(get("/after"))
    parser.expect("GET")
    _, body = await read_response(reader, parser)
    assert body.startswith(b"app GET /after")
    writer.close()


async def test_50_mib_body_streams(setup: Setup) -> None:
    size, block = 50 * 1024 * 1024, bytes(range(256)) * 256  # 64 KiB
    reader, writer = await setup.connect()
    tracemalloc.start()
    try:
        writer.write(get("/big", "alice", "PUT", f"Content-Length: {size}\r\n"))
        digest = hashlib.sha256()
        for _ in range(size // len(block)):
            writer.write(block)
            digest.update(block)
            await writer.drain()
        parser = ResponseParser()
        parser.expect("PUT")
        _, body = await read_response(reader, parser)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"n={size} sha={digest.hexdigest()[:16]}" in body.decode()
    assert body.startswith(b"workstation PUT /big")
    # Client, router and server together never held more than a few MiB at once.
    assert peak < 16 * 1024 * 1024, peak
    writer.close()


async def test_expect_100_continue(setup: Setup) -> None:
    reader, writer = await setup.connect()
    writer.write(get("/upload", "alice", "POST", "Expect: 100-continue\r\nContent-Length: 4\r\n"))
    async with asyncio.timeout(TIMEOUT):
        interim = await reader.readuntil(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"data")
    parser = ResponseParser()
    parser.expect("POST")
    _, body = await read_response(reader, parser)
    assert body.startswith(b"workstation POST /upload x-dev=alice n=4")
    writer.close()


async def test_head_then_get_on_one_connection(setup: Setup) -> None:
    reader, writer = await setup.connect()
    writer.write(get("/h", "alice", "HEAD") + get("/g", "alice"))
    parser = ResponseParser()
    parser.expect("HEAD")
    head, body = await read_response(reader, parser)
    assert head.status == 200
    assert int(dict(head.headers)["content-length"]) > 0
    assert body == b""
    parser.expect("GET")
    _, body = await read_response(reader, parser)
    assert body.startswith(b"workstation GET /g")
    writer.close()


async def test_websocket_upgrade_is_piped(setup: Setup) -> None:
    url = f"http://127.0.0.1:{setup.router_port}/ws"
    async with aiohttp.ClientSession() as session:
        for dev, name in (("alice", WS), ("", APP)):
            headers = {"x-dev": dev} if dev else {}
            async with session.ws_connect(
                url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=TIMEOUT)
            ) as ws:
                for text in ("one", "two"):
                    await ws.send_str(text)
                    message = await ws.receive(timeout=TIMEOUT)
                    assert message.data == f"{name}:{text}"


async def raw_server(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def test_non_http_goes_to_the_app_raw(setup: Setup) -> None:
    seen_eof = asyncio.Event()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        seen_eof.set()
        writer.write(b"|bye")
        writer.close()

    server, setup.ports[APP] = await raw_server(echo)
    async with server:
        reader, writer = await setup.connect()
        hello = b"\x16\x03\x01\x00\x05hello"  # a TLS record: not HTTP
        writer.write(hello)
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(len(hello)) == hello
            writer.write_eof()
            await seen_eof.wait()
            assert await reader.read() == b"|bye"
        writer.close()
    assert setup.not_http == 1


async def test_server_speaks_first_protocol(setup: Setup) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 smtp ready\r\n")
        line = await reader.readline()
        writer.write(b"250 " + line)
        await writer.drain()
        writer.close()

    setup.sniff_timeout = 0.1
    server, setup.ports[APP] = await raw_server(banner)
    async with server:
        reader, writer = await setup.connect()
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readline() == b"220 smtp ready\r\n"
            writer.write(b"HELO me\r\n")
            assert await reader.readline() == b"250 HELO me\r\n"
        writer.close()


async def test_a_silent_http_client_is_still_routed_per_request(setup: Setup) -> None:
    setup.sniff_timeout = 0.05
    reader, writer = await setup.connect()
    # Past the sniff timeout with no byte from the client, the app is dialled early.
    await eventually(lambda: setup.dials == {APP: 1}, "the app dialled early")
    parser = ResponseParser()
    for dev, name in (("alice", WS), ("", APP)):
        writer.write(get("/late", dev))
        parser.expect("GET")
        _, body = await read_response(reader, parser)
        assert body.startswith(name.encode())
    assert setup.dials == {APP: 1, WS: 1}  # the early app connection was the one reused
    writer.close()


async def test_502_when_an_upstream_refuses(setup: Setup) -> None:
    setup.ports[WS] = closed_port()
    reader, writer = await setup.connect()
    writer.write(get("/", "alice"))
    async with asyncio.timeout(TIMEOUT):
        answer = await reader.read()  # then the connection closes
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"workstation does not answer" in answer
    writer.close()


@pytest.mark.parametrize(
    ("sent", "expected_start"),
    [
        (b"", b"HTTP/1.1 502 Bad Gateway"),  # nothing sent yet: a 502
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", b"HTTP/1.1 200 OK"),
    ],
)
async def test_upstream_dying_mid_response(
    setup: Setup, sent: bytes, expected_start: bytes
) -> None:
    async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(sent)
        await writer.drain()
        writer.close()

    server, setup.ports[WS] = await raw_server(dies)
    async with server:
        reader, writer = await setup.connect()
        writer.write(get("/", "alice"))
        async with asyncio.timeout(TIMEOUT):
            answer = await reader.read()
        assert answer.startswith(expected_start)
        if sent:
            assert answer == sent  # relayed as far as it went, then closed
        writer.close()


async def test_close_delimited_response_closes_the_connection(setup: Setup) -> None:
    upstream_closed = asyncio.Event()

    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()
        upstream_closed.set()

    server, setup.ports[WS] = await raw_server(old_style)
    async with server:
        reader, writer = await setup.connect()
        writer.write(get("/", "alice"))
        async with asyncio.timeout(TIMEOUT):
            assert await reader.read() == b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
        assert upstream_closed.is_set()
        writer.close()


async def test_upstreams_close_when_the_caller_goes(setup: Setup) -> None:
    closed = asyncio.Event()

    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert await reader.read() == b""  # the router closed its side
        closed.set()
        writer.close()

    server, setup.ports[WS] = await raw_server(keep_alive)
    async with server:
        reader, writer = await setup.connect()
        writer.write(get("/", "alice"))
        parser = ResponseParser()
        parser.expect("GET")
        _, body = await read_response(reader, parser)
        assert body == b"ok"
        writer.close()
        async with asyncio.timeout(TIMEOUT):
            await closed.wait()


async def test_malformed_request_gets_400(setup: Setup) -> None:
    reader, writer = await setup.connect()
    writer.write(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    async with asyncio.timeout(TIMEOUT):
        answer = await reader.read()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"without a colon" in answer
    assert setup.dials == {}
    writer.close()


async def test_request_asking_to_close_closes_after_its_response(setup: Setup) -> None:
    reader, writer = await setup.connect()
    writer.write(get("/", "alice", extra="Connection: close\r\n") + get("/never"))
    parser = ResponseParser()
    parser.expect("GET")
    _, body = await read_response(reader, parser)
    assert body.startswith(b"workstation GET /")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.read() == b""
    writer.close()


# -- h2c ----------------------------------------------------------------------------------


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class H2Server(asyncio.Protocol):
    """A minimal h2c server: answers `<name> <method> <path> x-dev=<x-dev> n=<body bytes>`
    when a request ends, followed by 500 000 bytes of 'x' for /big (flow-controlled)."""

    def __init__(self, name: str) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, dict[str, str]] = {}
        self.received: dict[int, int] = {}
        self.outgoing: dict[int, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                assert event.stream_id is not None
                self.requests[event.stream_id] = {text(k): text(v) for k, v in event.headers or []}
                self.received[event.stream_id] = 0
            elif isinstance(event, h2.events.DataReceived):
                assert event.stream_id is not None
                self.received[event.stream_id] += len(event.data or b"")
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
            elif isinstance(event, h2.events.StreamEnded):
                assert event.stream_id is not None
                self.respond(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                for stream_id in list(self.outgoing):
                    self.send_some(stream_id)
        self.transport.write(self.conn.data_to_send())

    def respond(self, stream_id: int) -> None:
        headers = self.requests[stream_id]
        text = (
            f"{self.name} {headers[':method']} {headers[':path']}"
            f" x-dev={headers.get('x-dev', '')} n={self.received[stream_id]}"
        )
        body = text.encode() + (b"x" * 500_000 if headers[":path"] == "/big" else b"")
        self.conn.send_headers(stream_id, [(":status", "200"), ("content-length", str(len(body)))])
        self.outgoing[stream_id] = body
        self.send_some(stream_id)

    def send_some(self, stream_id: int) -> None:
        body = self.outgoing[stream_id]
        while body:
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                break
            self.conn.send_data(stream_id, body[:window])
            body = body[window:]
        self.outgoing[stream_id] = body
        if not body:
            self.conn.end_stream(stream_id)
            del self.outgoing[stream_id]


class H2Client:
    """An h2c client on one connection, several streams at once, flow control obeyed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.reader, self.writer = reader, writer
        self.status: dict[int, str] = {}
        self.bodies: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.conn.initiate_connection()
        self.writer.write(self.conn.data_to_send())

    async def pump(self) -> None:
        data = await self.reader.read(65536)
        assert data, "the router closed the connection"
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                assert event.stream_id is not None
                headers = {text(k): text(v) for k, v in event.headers or []}
                self.status[event.stream_id] = headers[":status"]
            elif isinstance(event, h2.events.DataReceived):
                assert event.stream_id is not None
                self.bodies[event.stream_id] = self.bodies.get(event.stream_id, b"") + (
                    event.data or b""
                )
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                assert event.stream_id is not None
                self.ended.add(event.stream_id)
        self.writer.write(self.conn.data_to_send())

    async def request(self, path: str, dev: str = "", body: bytes = b"") -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST" if body else "GET"), (":scheme", "http")]
        headers += [(":authority", "svc"), (":path", path)]
        if dev:
            headers.append(("x-dev", dev))
        self.conn.send_headers(stream_id, headers, end_stream=not body)
        self.writer.write(self.conn.data_to_send())
        async with asyncio.timeout(TIMEOUT):
            while body:
                window = min(
                    self.conn.local_flow_control_window(stream_id),
                    self.conn.max_outbound_frame_size,
                )
                if window <= 0:
                    await self.pump()
                    continue
                self.conn.send_data(stream_id, body[:window], end_stream=len(body) <= window)
                body = body[window:]
                self.writer.write(self.conn.data_to_send())
        return stream_id

    async def response(self, stream_id: int) -> tuple[str, bytes]:
        async with asyncio.timeout(TIMEOUT):
            while stream_id not in self.ended:
                await self.pump()
        return self.status.get(stream_id, ""), self.bodies.get(stream_id, b"")


@pytest.fixture
async def h2_servers(setup: Setup) -> AsyncIterator[Setup]:
    loop = asyncio.get_running_loop()
    servers = []
    for name in (APP, WS):
        server = await loop.create_server(functools.partial(H2Server, name), "127.0.0.1", 0)
        setup.ports[name] = int(server.sockets[0].getsockname()[1])
        servers.append(server)
    yield setup
    for server in servers:
        server.close()


async def test_h2c_routes_each_stream(h2_servers: Setup) -> None:
    client = H2Client(*await h2_servers.connect())
    for dev, name in (("alice", WS), ("", APP), ("alice", WS), ("bob", APP)):
        status, body = await client.response(await client.request("/one", dev))
        assert status == "200"
        assert body.decode() == f"{name} GET /one x-dev={dev} n=0"
    assert h2_servers.dials == {WS: 1, APP: 1}  # one h2 connection per destination
    client.writer.close()


async def test_h2c_concurrent_streams_with_bodies_both_ways(h2_servers: Setup) -> None:
    client = H2Client(*await h2_servers.connect())
    upload = bytes(range(256)) * 12_000  # 3 MiB: more than any window
    big = await client.request("/big", "alice")
    post = await client.request("/up", "", upload)
    other = await client.request("/up", "alice", b"small")
    status, body = await client.response(post)
    assert (status, body) == ("200", f"app POST /up x-dev= n={len(upload)}".encode())
    status, body = await client.response(big)
    assert status == "200"
    assert body == b"workstation GET /big x-dev=alice n=0" + b"x" * 500_000
    assert (await client.response(other))[1] == b"workstation POST /up x-dev=alice n=5"
    client.writer.close()


async def test_h2c_502_when_a_destination_refuses(h2_servers: Setup) -> None:
    h2_servers.ports[WS] = closed_port()
    client = H2Client(*await h2_servers.connect())
    status, body = await client.response(await client.request("/", "alice"))
    assert status == "502"
    assert b"workstation does not answer" in body
    # The connection goes on for the other side.
    status, body = await client.response(await client.request("/", ""))
    assert (status, body) == ("200", b"app GET / x-dev= n=0")
    client.writer.close()


async def test_h2c_upstream_dying_answers_502(h2_servers: Setup) -> None:
    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    server, h2_servers.ports[WS] = await raw_server(hangs_up)
    async with server:
        client = H2Client(*await h2_servers.connect())
        status, body = await client.response(await client.request("/", "alice"))
        assert status == "502"
        assert b"workstation: closed the connection" in body
        client.writer.close()


async def test_h2c_garbage_after_the_preface_closes(h2_servers: Setup) -> None:
    reader, writer = await h2_servers.connect()
    data_on_stream_0 = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"  # a protocol error
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + data_on_stream_0)
    async with asyncio.timeout(TIMEOUT):
        while await reader.read(65536):
            pass  # whatever the router says (a GOAWAY), then the connection ends
    assert h2_servers.dials == {}
    writer.close()


async def test_caller_closing_before_a_request_is_quiet(setup: Setup) -> None:
    _, writer = await setup.connect()
    writer.close()
    async with asyncio.timeout(TIMEOUT):
        await setup.ended.get()
    assert setup.dials == {}  # nothing dialled for a connection that said nothing


async def test_final_answer_before_the_body_closes_after_it(setup: Setup) -> None:
    """An upstream refusing an Expect: 100-continue upload: its answer, then a close
    (the body the client may still send cannot be told apart from a next request)."""

    async def refuses(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server, setup.ports[WS] = await raw_server(refuses)
    async with server:
        reader, writer = await setup.connect()
        writer.write(get("/up", "alice", "PUT", "Expect: 100-continue\r\nContent-Length: 1000\r\n"))
        async with asyncio.timeout(TIMEOUT):
            answer = await reader.read()
        assert answer == b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n"
        writer.close()


async def test_a_kept_alive_connection_closed_under_a_request_is_replaced(setup: Setup) -> None:
    """The upstream's idle timeout races a request: a GET goes again on a new connection."""
    connections = 0

    async def closes_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % connections)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request: dropped, unanswered
        writer.close()

    server, setup.ports[WS] = await raw_server(closes_after_one)
    async with server:
        reader, writer = await setup.connect()
        parser = ResponseParser()
        for expected in (b"1", b"2"):
            writer.write(get("/", "alice"))
            parser.expect("GET")
            _, body = await read_response(reader, parser)
            assert body == expected
        # A POST is not sent twice: the caller gets a 502.
        writer.write(get("/", "alice", "POST", "Content-Length: 0\r\n"))
        async with asyncio.timeout(TIMEOUT):
            answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 502 Bad Gateway")
        assert setup.dials == {WS: 2}
        writer.close()
