"""What several component tests share: a real manager service with no cluster behind it,
an echo server, and a flow through the manager to it."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from kubepresence.manager.core.sessions import SessionRegistry
from kubepresence.manager.k8s.discovery import ClusterNetwork
from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol.transport import serve_unix
from kubepresence.protocol.tunnel import relay
from kubepresence.userd.rpc.manager import Destination, ManagerClient

# What the manager would discover in a cluster; here there is none.
NETWORK = ClusterNetwork(
    pod_subnets=["10.244.0.0/16"],
    service_subnets=["10.96.0.0/16"],
    cluster_domain="cluster.local",
    dns_service_ip="10.96.0.10",
    cluster_id="test-cluster",
)


@pytest.fixture
def manager_service() -> ManagerService:
    """The manager's gRPC service, not yet served."""
    return ManagerService(
        sessions=SessionRegistry(ttl=30), network=NETWORK, dial_timeout=2.0, idle_timeout=30.0
    )


@pytest.fixture
async def manager_socket(tmp_path: Path, manager_service: ManagerService) -> AsyncIterator[Path]:
    """The manager's gRPC service on a unix socket."""
    path = tmp_path / "manager.socket"
    server = await serve_unix([manager_service], path)
    yield path
    server.close()
    await server.wait_closed()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A TCP echo server on loopback that half-closes after the client's half-close."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


EchoFlow = Callable[[ManagerClient], Awaitable[tuple[bytes, bytes]]]
FLOW_DEADLINE = 20.0  # for the echo to come back whole once the relay ended


@pytest.fixture
def echo_flow(echo_port: int) -> EchoFlow:
    """4 MiB through a flow the manager dials to the echo server, and back: (sent, received)."""
    return lambda client: _echo_flow(client, echo_port)


async def _echo_flow(client: ManagerClient, echo_port: int) -> tuple[bytes, bytes]:
    # A local socket pair plays the application on the workstation side of the flow.
    payload = os.urandom(4 * 1024 * 1024)
    app_side, relay_side = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=relay_side)
    app_reader, app_writer = await asyncio.open_connection(sock=app_side)

    async def application() -> bytes:
        app_writer.write(payload)
        await app_writer.drain()
        app_writer.write_eof()
        received = await app_reader.read()  # until the echo's half-close arrives
        app_writer.close()
        return received

    async with client.dial("session-1", Destination("127.0.0.1", echo_port), 10.0) as stream:
        app_task = asyncio.create_task(application())
        await relay(stream, reader, writer, idle_timeout=10.0)
        return payload, await asyncio.wait_for(app_task, FLOW_DEADLINE)
