"""Component test: userd's gRPC channel over port-forward streams, against the real manager
service. A stand-in opener connects each "port-forward" to the manager's unix socket (the
e2e tests run the same channel through the real API server).

Scenarios:
- a unary call works; when the port-forward under it ends, the next call opens a new one;
- a 4 MiB flow through the manager's DialCluster arrives intact both ways while a slow stream
  makes the transport pause and resume the writer;
- writes made in one turn of the event loop leave as one message, a long one in pieces;
- `close` sends what was written before it, then ends the pump, and the protocol hears
  of it once; `abort` drops what was not sent;
- without `run`, a call fails with one clear cluster error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from grpclib.protocol import H2Protocol
from kptest.standins import SocketOpener

from kubepresence.protocol.errors import Category, KubepresenceError
from kubepresence.protocol.transport import CONFIGURATION
from kubepresence.userd.k8s.portforward_grpc import (
    HIGH_WATER,
    MESSAGE_SIZE,
    PortForwardChannel,
    PortForwardTransport,
)
from kubepresence.userd.rpc.manager import ManagerClient


@contextlib.asynccontextmanager
async def running(opener: SocketOpener) -> AsyncIterator[PortForwardChannel]:
    channel = PortForwardChannel(opener, CONFIGURATION)
    ready = asyncio.Event()
    runner = asyncio.create_task(channel.run(ready))
    await ready.wait()
    try:
        yield channel
    finally:
        channel.close()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_calls_reconnect_after_the_port_forward_ends(manager_socket: Path) -> None:
    opener = SocketOpener(manager_socket)
    async with running(opener) as channel:
        client = ManagerClient(channel)
        assert (await client.version()).count(".") >= 2
        assert len(opener.streams) == 1
        opener.streams[0].writer.close()  # the API server dropped the port-forward
        for _ in range(50):
            await asyncio.sleep(0.02)
            with contextlib.suppress(KubepresenceError):
                if (await client.version()).count(".") >= 2:
                    break
        assert len(opener.streams) == 2


async def test_a_flow_arrives_intact_through_a_slow_stream(
    manager_socket: Path,
    echo_flow: Callable[..., Awaitable[tuple[bytes, bytes]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[int] = []
    original_pause = H2Protocol.pause_writing

    def counting_pause(protocol: H2Protocol) -> None:
        pauses.append(1)
        original_pause(protocol)

    monkeypatch.setattr(H2Protocol, "pause_writing", counting_pause)

    opener = SocketOpener(manager_socket, send_delay=0.005)
    async with running(opener) as channel:
        payload, received = await echo_flow(ManagerClient(channel))
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert max(opener.streams[0].sent) == MESSAGE_SIZE
    assert pauses  # the slow stream held the writer back


class Recording(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[str] = []

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def data_received(self, data: bytes) -> None:
        self.events.append(f"data {data!r}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(f"lost {exc!r}")


class QueueStream:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()

    def new_message(self) -> bytearray:
        return bytearray(b">")  # stands for the channel byte

    async def send_message(self, message: bytearray) -> None:
        self.sent.append(bytes(message))

    async def receive(self) -> bytes | None:
        return await self.incoming.get()


async def test_one_turn_of_writes_is_one_message_and_flow_control_follows() -> None:
    stream, protocol = QueueStream(), Recording()
    transport = PortForwardTransport(stream, protocol)
    pump = asyncio.create_task(transport.pump())
    transport.write(b"a")
    transport.write(bytearray(b"b"))
    transport.write(memoryview(b"c"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.sent == [b">abc"]
    transport.write(b"x" * (HIGH_WATER + 1))
    assert protocol.events == ["pause"]
    assert transport.get_write_buffer_size() == HIGH_WATER + 1
    for _ in range(20):
        await asyncio.sleep(0)
    assert protocol.events == ["pause", "resume"]
    assert [len(message) - 1 for message in stream.sent[1:]] == [MESSAGE_SIZE] * 4 + [1]
    assert b"".join(message[1:] for message in stream.sent[1:]) == b"x" * (HIGH_WATER + 1)
    stream.incoming.put_nowait(b"from the pod")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert protocol.events[-1] == "data b'from the pod'"
    stream.incoming.put_nowait(None)  # the pod side ended
    await asyncio.wait_for(pump, 1)
    assert protocol.events[-1] == "lost None"
    assert transport.is_closing()


async def test_close_flushes_then_ends_the_pump_and_the_protocol_hears_once() -> None:
    stream, protocol = QueueStream(), Recording()
    transport = PortForwardTransport(stream, protocol)
    pump = asyncio.create_task(transport.pump())
    await asyncio.sleep(0)
    transport.write(b"last words")
    transport.close()
    transport.write(b"after close")  # dropped, as a closing socket transport does
    await asyncio.wait_for(pump, 1)
    assert protocol.events == ["lost None"]
    assert stream.sent == [b">last words"]


async def test_abort_drops_what_was_not_sent() -> None:
    stream, protocol = QueueStream(), Recording()
    transport = PortForwardTransport(stream, protocol)
    pump = asyncio.create_task(transport.pump())
    await asyncio.sleep(0)
    transport.write(b"never sent")
    transport.abort()
    await asyncio.wait_for(pump, 1)
    assert protocol.events == ["lost None"]
    assert stream.sent == []


async def test_without_run_a_call_fails_clearly(manager_socket: Path) -> None:
    channel = PortForwardChannel(SocketOpener(manager_socket), CONFIGURATION)
    with pytest.raises(KubepresenceError) as caught:
        await ManagerClient(channel).version()
    assert caught.value.category is Category.CLUSTER
    assert "not running" in caught.value.message
    channel.close()
