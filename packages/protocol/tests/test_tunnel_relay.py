"""The tunnel relay against an in-memory message stream (no gRPC, no network)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from kubepresence.protocol.gen.common import TunnelControlCode, TunnelMessage
from kubepresence.protocol.tunnel import FlowResetError, control, relay


class MemoryStream:
    """The far end of a tunnel stream, driven by the test."""

    def __init__(self) -> None:
        self.inbound: asyncio.Queue[TunnelMessage | None] = asyncio.Queue()
        self.sent: list[TunnelMessage] = []

    async def send_message(self, message: TunnelMessage) -> None:
        self.sent.append(message)

    async def recv_message(self) -> TunnelMessage | None:
        return await self.inbound.get()


async def connected_pair() -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter
]:
    a, b = socket.socketpair()
    r1, w1 = await asyncio.open_connection(sock=a)
    r2, w2 = await asyncio.open_connection(sock=b)
    return r1, w1, r2, w2


async def test_data_and_half_close_both_ways() -> None:
    stream = MemoryStream()
    reader, writer, app_reader, app_writer = await connected_pair()
    task = asyncio.create_task(relay(stream, reader, writer, idle_timeout=5))
    await stream.inbound.put(TunnelMessage(data=b"hello "))
    await stream.inbound.put(TunnelMessage(data=b"app"))
    await stream.inbound.put(control(TunnelControlCode.WRITE_CLOSED))
    assert await app_reader.read() == b"hello app"  # EOF after the half-close
    app_writer.write(b"answer")
    app_writer.write_eof()
    await asyncio.wait_for(task, 5)
    data = b"".join(m.data for m in stream.sent if m.data is not None)
    assert data == b"answer"
    last = stream.sent[-1].control
    assert last is not None
    assert last.code == TunnelControlCode.WRITE_CLOSED
    app_writer.close()


async def test_reset_from_peer_aborts() -> None:
    stream = MemoryStream()
    reader, writer, _app_reader, app_writer = await connected_pair()
    await stream.inbound.put(control(TunnelControlCode.RESET, "gone"))
    with pytest.raises(FlowResetError, match="gone"):
        await asyncio.wait_for(relay(stream, reader, writer, idle_timeout=5), 5)
    app_writer.close()


async def test_idle_flow_times_out() -> None:
    stream = MemoryStream()
    reader, writer, _app_reader, app_writer = await connected_pair()
    with pytest.raises(TimeoutError, match="idle"):
        await asyncio.wait_for(relay(stream, reader, writer, idle_timeout=0.2), 5)
    assert writer.is_closing()
    app_writer.close()
