"""Component test: userd's splice socket, which carries rootd's channel to the manager.

A gRPC channel on the splice socket (as rootd opens it) reaches the real manager service
through a stand-in opener whose "port-forwards" are connections to the manager's unix
socket (the e2e tests splice through the real API server, over SPDY).

Scenarios:
- calls and a 4 MiB flow through the manager's DialCluster pass intact both ways, also when
  the port-forward is slow to send (the splice holds the reader back, loses nothing);
- on uvloop, as userd runs, what rootd sends at once (the HTTP/2 preface, before the
  port-forward is open) is held and sent on, not lost;
- each connection to the splice socket is one port-forward; when the port-forward ends,
  the channel's next call opens a new connection and so a new port-forward;
- a port-forward that cannot be opened ends that connection at once (the call fails with
  a connection error, never hangs), and the next one works;
- when the splices stop, the socket is gone and the spliced connections are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import uvloop
from grpclib.client import Channel
from kptest.standins import SocketOpener

from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol.errors import KubepresenceError
from kubepresence.protocol.transport import serve_unix, unix_channel
from kubepresence.userd.k8s.portforward_splice import ManagerSplices
from kubepresence.userd.rpc.manager import ManagerClient

CALL_DEADLINE = 10.0


@contextlib.asynccontextmanager
async def spliced(
    opener: SocketOpener, socket_path: Path
) -> AsyncIterator[tuple[ManagerSplices, Channel]]:
    splices = ManagerSplices(opener, socket_path)
    ready = asyncio.Event()
    runner = asyncio.create_task(splices.run(ready))
    await asyncio.wait_for(ready.wait(), CALL_DEADLINE)
    channel = unix_channel(socket_path)
    try:
        yield splices, channel
    finally:
        channel.close()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def _version_when_reachable(client: ManagerClient) -> str:
    """The manager's version once the channel reconnected (bounded)."""
    async with asyncio.timeout(CALL_DEADLINE):
        while True:
            with contextlib.suppress(KubepresenceError):
                return await client.version()
            await asyncio.sleep(0.02)


async def test_calls_and_a_flow_pass_intact_through_a_slow_port_forward(
    manager_socket: Path,
    tmp_path: Path,
    echo_flow: Callable[..., Awaitable[tuple[bytes, bytes]]],
) -> None:
    opener = SocketOpener(manager_socket, send_delay=0.002)
    async with spliced(opener, tmp_path / "userd-manager.socket") as (splices, channel):
        client = ManagerClient(channel)
        assert (await client.version()).count(".") >= 2
        payload, received = await echo_flow(client)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        assert len(opener.streams) == 1  # one connection, one port-forward
        assert splices.connections == 1


def test_on_uvloop_what_arrives_before_the_port_forward_is_sent_on(
    tmp_path: Path, manager_service: ManagerService
) -> None:
    """uvloop delivers the first bytes of an accepted connection even when the protocol
    pauses reading in connection_made: the splice must keep them for the port-forward."""

    async def scenario() -> str:
        manager_path = tmp_path / "manager.socket"
        server = await serve_unix([manager_service], manager_path)
        try:
            opener = SocketOpener(manager_path, send_delay=0.002)
            async with spliced(opener, tmp_path / "userd-manager.socket") as (_, channel):
                return await asyncio.wait_for(ManagerClient(channel).version(), CALL_DEADLINE)
        finally:
            server.close()
            await server.wait_closed()

    assert uvloop.run(scenario()).count(".") >= 2


async def test_a_lost_port_forward_is_a_new_connection_and_a_new_port_forward(
    manager_socket: Path, tmp_path: Path
) -> None:
    opener = SocketOpener(manager_socket)
    async with spliced(opener, tmp_path / "userd-manager.socket") as (splices, channel):
        client = ManagerClient(channel)
        await client.version()
        opener.streams[0].writer.close()  # the API server dropped the port-forward
        assert (await _version_when_reachable(client)).count(".") >= 2
        assert len(opener.streams) == 2
        assert splices.connections == 2


async def test_a_port_forward_that_cannot_open_fails_the_call_then_the_next_works(
    manager_socket: Path, tmp_path: Path
) -> None:
    opener = SocketOpener(manager_socket)
    opener.refuse = "no Ready traffic manager pod in namespace kubepresence"
    async with spliced(opener, tmp_path / "userd-manager.socket") as (_, channel):
        client = ManagerClient(channel)
        with pytest.raises(KubepresenceError):
            await asyncio.wait_for(client.version(), CALL_DEADLINE)
        opener.refuse = ""
        assert (await _version_when_reachable(client)).count(".") >= 2


async def test_stopping_removes_the_socket_and_closes_the_spliced_connections(
    manager_socket: Path, tmp_path: Path
) -> None:
    opener = SocketOpener(manager_socket)
    path = tmp_path / "userd-manager.socket"
    async with spliced(opener, path) as (_, channel):
        await ManagerClient(channel).version()
        reader, writer = await asyncio.open_unix_connection(str(path))
    assert not path.exists()
    async with asyncio.timeout(CALL_DEADLINE):
        assert await reader.read() == b""  # closed by the splice, not left open
    writer.close()
    assert opener.streams
    assert all(stream.writer.is_closing() for stream in opener.streams)  # port-forwards too
