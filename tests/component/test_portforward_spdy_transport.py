"""Component test: userd's SPDY port-forward shell against a stand-in SPDY server on
loopback (plain HTTP; the e2e tests run the same code through the real API server, the
kubelet and containerd).

Scenarios:
- the upgrade request asks for SPDY/3.1 and portforward.k8s.io, with the bearer token;
  both streams are opened and the error stream is finished once the server replies;
- `SpdyTransport`: writes made in one turn of the event loop leave as one DATA frame, a
  long one in frames of at most FRAME_PAYLOAD; what the server sent before the protocol
  was attached reaches it first; `close` sends what was written before it, then GOAWAY,
  and the protocol hears of the end once; `abort` drops what was not sent;
- text on the error stream ends the transport with a cluster error;
- a refused upgrade says the server's status and its Status message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from kubepresence.protocol.errors import ClusterError
from kubepresence.userd.core.portforward_spdy import UpgradeRefused
from kubepresence.userd.k8s.portforward_spdy import (
    FRAME_PAYLOAD,
    SpdyStream,
    SpdyTransport,
    open_spdy,
)

UPGRADED = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
)
SYN_STREAM, SYN_REPLY, GOAWAY = 1, 2, 7
Frame = tuple[str, int, int, bytes]  # control/data, type or stream, flags, body


def control(kind: int, body: bytes, flags: int = 0) -> bytes:
    return struct.pack(">II", 0x80030000 | kind, flags << 24 | len(body)) + body


def data(stream: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">II", stream, flags << 24 | len(payload)) + payload


class StandInServer:
    """Answers the upgrade, replies to both streams, records every frame it gets."""

    def __init__(self, answer: bytes = UPGRADED, greeting: bytes = b"") -> None:
        self.answer = answer
        self.greeting = greeting  # sent on the data stream right after the replies
        self.requests: list[bytes] = []
        self.frames: list[Frame] = []
        self.arrived = asyncio.Condition()
        self.writer: asyncio.StreamWriter | None = None
        self.ended = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.answer)
            if not self.answer.startswith(b"HTTP/1.1 101"):
                return
            while True:
                try:
                    first, second = struct.unpack(">II", await reader.readexactly(8))
                except asyncio.IncompleteReadError:
                    return
                body = await reader.readexactly(second & 0xFFFFFF)
                if first & 0x80000000:
                    frame: Frame = ("control", first & 0xFFFF, second >> 24, body)
                    if first & 0xFFFF == SYN_STREAM:
                        stream = struct.unpack_from(">I", body)[0]
                        writer.write(control(SYN_REPLY, struct.pack(">I", stream) + b"hdrs"))
                        if stream == 3 and self.greeting:
                            writer.write(data(3, self.greeting))
                else:
                    frame = ("data", first, second >> 24, body)
                async with self.arrived:
                    self.frames.append(frame)
                    self.arrived.notify_all()
        finally:
            writer.close()
            self.ended.set()

    async def wait_for(self, count: int) -> list[Frame]:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.frames) >= count), 5)
        return self.frames

    def data_frames(self) -> list[Frame]:
        return [f for f in self.frames if f[0] == "data" and f[1] == 3]


@contextlib.asynccontextmanager
async def serving(server: StandInServer) -> AsyncIterator[client.Configuration]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.api_key = {"BearerToken": "secret-token"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    try:
        async with listener:
            yield configuration
    finally:
        if server.writer is not None:
            server.writer.close()


class Recording(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: list[Exception | None] = []

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


async def open_stream(configuration: client.Configuration) -> SpdyStream:
    return await asyncio.wait_for(open_spdy(configuration, "ns", "pod-1", 8081), 5)


@contextlib.asynccontextmanager
async def attached(
    server: StandInServer,
) -> AsyncIterator[tuple[SpdyTransport, Recording, asyncio.Task[None]]]:
    """A SpdyTransport over a forward from the server, its protocol, and its pump."""
    async with serving(server) as configuration:
        stream = await open_stream(configuration)
        protocol = Recording()
        transport = SpdyTransport(stream, protocol)
        yield transport, protocol, asyncio.create_task(transport.pump())


async def test_upgrade_and_streams() -> None:
    server = StandInServer()
    async with serving(server) as configuration:
        stream = await open_stream(configuration)
        frames = await server.wait_for(3)
        stream.close()
    request = server.requests[0].decode()
    assert request.startswith("POST /api/v1/namespaces/ns/pods/pod-1/portforward HTTP/1.1\r\n")
    assert "Upgrade: SPDY/3.1\r\n" in request
    assert "X-Stream-Protocol-Version: portforward.k8s.io\r\n" in request
    assert "authorization: Bearer secret-token\r\n" in request
    kinds = [(kind, int(struct.unpack_from(">I", body)[0])) for _, kind, _, body in frames[:2]]
    assert kinds == [(SYN_STREAM, 1), (SYN_STREAM, 3)]
    assert frames[2] == ("data", 1, 1, b"")  # the error stream, finished by the client


async def test_transport_frames_flushes_on_close_and_reports_the_end_once() -> None:
    server = StandInServer(greeting=b"hello from the pod")
    async with attached(server) as (transport, protocol, pump):
        await asyncio.sleep(0)
        assert bytes(protocol.received) == b"hello from the pod"  # queued before attach
        transport.write(b"a")
        transport.write(bytearray(b"b"))
        transport.write(memoryview(b"c"))
        await server.wait_for(4)
        assert server.data_frames() == [("data", 3, 0, b"abc")]
        long = bytes(range(256)) * (2 * FRAME_PAYLOAD // 256 + 100)
        transport.write(long)
        transport.write(b"last words")
        transport.close()
        transport.write(b"after close")  # dropped, as a closing socket transport does
        await asyncio.wait_for(pump, 5)
        await asyncio.wait_for(server.ended.wait(), 5)
    sizes = [len(body) for _, _, _, body in server.data_frames()[1:]]
    assert sizes == [FRAME_PAYLOAD, FRAME_PAYLOAD, len(long) - 2 * FRAME_PAYLOAD + 10]
    assert b"".join(body for _, _, _, body in server.data_frames()[1:]) == long + b"last words"
    assert server.frames[-1][:2] == ("control", GOAWAY)
    assert protocol.lost == [None]


async def test_abort_drops_what_was_not_sent() -> None:
    server = StandInServer()
    async with attached(server) as (transport, protocol, pump):
        await asyncio.sleep(0)
        transport.write(b"never sent")
        transport.abort()
        await asyncio.wait_for(pump, 5)
        await asyncio.wait_for(server.ended.wait(), 5)
    assert server.data_frames() == []
    assert protocol.lost == [None]


async def test_error_stream_text_ends_the_transport_with_a_cluster_error() -> None:
    server = StandInServer()
    async with attached(server) as (_, protocol, pump):
        assert server.writer is not None
        server.writer.write(data(1, b"error forwarding port 8081: connection refused", 1))
        await asyncio.wait_for(pump, 5)
    (lost,) = protocol.lost
    assert isinstance(lost, ClusterError)
    assert "connection refused" in lost.message


async def test_a_refused_upgrade_says_why() -> None:
    status = {"kind": "Status", "message": 'pods "pod-1" is forbidden: no', "code": 403}
    body = json.dumps(status).encode()
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
    refusal += b"Content-Length: %d\r\n\r\n" % len(body) + body
    server = StandInServer(answer=refusal)
    async with serving(server) as configuration:
        with pytest.raises(UpgradeRefused) as refused:
            await open_stream(configuration)
    assert refused.value.status == 403
    assert str(refused.value) == '403 Forbidden: pods "pod-1" is forbidden: no'
