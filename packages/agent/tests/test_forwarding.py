"""The agent's pass-through on 127.0.0.1: byte-exact both ways, half-close, refusals.

Scenarios:
- 32 MiB through the agent to an echo app come back identical (sha256), while the app
  sees the client's half-close and answers after it;
- a client that half-closes first still gets everything the app sends afterwards;
- a takeover port whose app is down resets the client (no hang, no crash of the agent),
  and the next connection works once the app is up;
- many concurrent connections are independent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import pytest

from kubepresence.agent.net import forwarding
from kubepresence.agent.net.forwarding import Forwarder
from kubepresence.protocol.agents import PortTakeover


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def echo_then_trailer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until the client half-closes, then send a trailer and close."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write(b"TRAILER-after-half-close")
    await writer.drain()
    writer.close()


class Setup:
    def __init__(self, app_port: int, agent_port: int, forwarder: Forwarder) -> None:
        self.app_port, self.agent_port, self.forwarder = app_port, agent_port, forwarder


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    app_port, agent_port = free_port(), free_port()
    app = await asyncio.start_server(echo_then_trailer, "127.0.0.1", app_port)
    forwarder = Forwarder([PortTakeover("http", app_port, agent_port)], host="127.0.0.1")
    async with asyncio.TaskGroup() as group:
        await forwarder.start(group)
        yield Setup(app_port, agent_port, forwarder)
        forwarder.close()
        forwarder.abort()
    app.close()
    await app.wait_closed()


async def test_bulk_transfer_is_byte_exact_with_half_close(setup: Setup) -> None:
    payload = os.urandom(32 * 1024 * 1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.agent_port)

    async def send() -> None:
        view = memoryview(payload)
        for offset in range(0, len(payload), 1 << 20):
            writer.write(view[offset : offset + (1 << 20)])
            await writer.drain()
        writer.write_eof()

    async def receive() -> bytes:
        return await reader.read()

    async with asyncio.timeout(60):
        _, answer = await asyncio.gather(send(), receive())
    writer.close()
    assert len(answer) == len(payload) + len(b"TRAILER-after-half-close")
    assert hashlib.sha256(answer[: len(payload)]).digest() == hashlib.sha256(payload).digest()
    assert answer.endswith(b"TRAILER-after-half-close")
    assert setup.forwarder.served == 1


async def test_client_half_close_first(setup: Setup) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.agent_port)
    writer.write(b"ping")
    writer.write_eof()
    async with asyncio.timeout(10):
        assert await reader.read() == b"pingTRAILER-after-half-close"
    writer.close()


async def test_app_down_resets_the_client_and_recovers(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    down_port = free_port()
    forwarder = Forwarder([PortTakeover("", down_port, free_port())], host="127.0.0.1")
    monkeypatch.setattr(forwarding, "DIAL_TIMEOUT", 2.0)
    async with asyncio.TaskGroup() as group:
        await forwarder.start(group)
        agent_port = forwarder.takeovers[0].agent_port
        reader, writer = await asyncio.open_connection("127.0.0.1", agent_port)
        writer.write(b"hello")
        # read() returns b"" on a plain close: only a reset raises.
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
        writer.close()
        # The app comes up: the same agent port now works.
        app = await asyncio.start_server(echo_then_trailer, "127.0.0.1", down_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", agent_port)
        writer.write(b"x")
        writer.write_eof()
        async with asyncio.timeout(5):
            assert await reader.read() == b"xTRAILER-after-half-close"
        writer.close()
        app.close()
        forwarder.close()
    assert forwarder.connections == 0


async def test_concurrent_connections(setup: Setup) -> None:
    def message(i: int) -> bytes:
        return f"conn-{i}-".encode() * 1000

    async def one(i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", setup.agent_port)
        writer.write(message(i))
        writer.write_eof()
        answer = await reader.read()
        writer.close()
        return answer

    async with asyncio.timeout(20):
        results = await asyncio.gather(*(one(i) for i in range(50)))
    for i, answer in enumerate(results):
        assert answer == message(i) + b"TRAILER-after-half-close"
    assert setup.forwarder.served == 50
