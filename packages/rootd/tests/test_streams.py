"""TcpStream, the relay's asyncio view of a connection, against a recording fake owner."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import PROTO_TCP, Chunk
from kubepresence.rootd.net.streams import StreamResetError, TcpStream

FLOW = FlowId(PROTO_TCP, ipaddress.ip_address("10.1.0.2"), 1, ipaddress.ip_address("198.18.0.1"), 2)


class FakeOwner:
    def __init__(self, space: int) -> None:
        self.space = space
        self.sent = bytearray()
        self.consumed = 0
        self.closed = False
        self.aborted = False

    def stream_send(self, flow: FlowId, data: Chunk) -> int:
        taken = min(self.space, len(data))
        self.sent += data[:taken]
        self.space -= taken
        return taken

    def stream_consumed(self, flow: FlowId, count: int) -> None:
        self.consumed += count

    def stream_close(self, flow: FlowId) -> None:
        self.closed = True

    def stream_abort(self, flow: FlowId) -> None:
        self.aborted = True


async def test_read_returns_data_reports_consumption_then_eof() -> None:
    owner = FakeOwner(0)
    stream = TcpStream(FLOW, owner)
    stream.feed(b"hello world")
    assert await stream.read(5) == b"hello"
    assert owner.consumed == 5
    assert await stream.read() == b" world"
    stream.feed_eof()
    assert await stream.read() == b""
    assert stream.at_eof


async def test_read_waits_for_data() -> None:
    stream = TcpStream(FLOW, FakeOwner(0))
    reader = asyncio.create_task(stream.read())
    await asyncio.sleep(0)
    assert not reader.done()
    stream.feed(b"late")
    assert await asyncio.wait_for(reader, 1) == b"late"


async def test_write_waits_for_space() -> None:
    owner = FakeOwner(4)
    stream = TcpStream(FLOW, owner)
    writer = asyncio.create_task(stream.write(b"0123456789"))
    await asyncio.sleep(0)
    assert not writer.done()
    assert bytes(owner.sent) == b"0123"
    owner.space = 100
    stream.wake_writer()
    await asyncio.wait_for(writer, 1)
    assert bytes(owner.sent) == b"0123456789"


async def test_reset_fails_readers_and_writers() -> None:
    owner = FakeOwner(0)
    stream = TcpStream(FLOW, owner)
    reader = asyncio.create_task(stream.read())
    writer = asyncio.create_task(stream.write(b"x"))
    await asyncio.sleep(0)
    stream.finish("reset by peer")
    with pytest.raises(StreamResetError, match="reset by peer"):
        await reader
    with pytest.raises(StreamResetError):
        await writer
    await asyncio.wait_for(stream.wait_closed(), 1)
    stream.abort()
    assert not owner.aborted  # nothing left to abort


async def test_close_is_half_close_and_idempotent() -> None:
    owner = FakeOwner(10)
    stream = TcpStream(FLOW, owner)
    stream.close()
    stream.close()
    assert owner.closed
    with pytest.raises(BrokenPipeError):
        await stream.write(b"after close")
    stream.feed(b"still readable")
    assert await stream.read() == b"still readable"
