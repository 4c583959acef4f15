"""Tunnel transport alone: bytes through userd's manager client and the manager's Tunnel.

Both ends run in this process over a unix socket; the far side of the flow is a local TCP
sink that counts bytes and echoes nothing. The baseline is the same transfer straight into
the same sink over loopback TCP, measured in the same run. The ratio attributes cost to
the gRPC framing and relay (the half of the data path between userd and the manager).
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kubepresence.manager.core.sessions import SessionRegistry
from kubepresence.manager.k8s.discovery import ClusterNetwork
from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol.transport import serve_unix, unix_channel
from kubepresence.protocol.tunnel import relay
from kubepresence.userd.rpc.manager import Destination, ManagerClient

CHUNK = 256 * 1024
# What the manager would discover in a cluster; the benchmark needs none.
NETWORK = ClusterNetwork(
    pod_subnets=["10.244.0.0/16"],
    service_subnets=["10.96.0.0/16"],
    cluster_domain="cluster.local",
    dns_service_ip="10.96.0.10",
    cluster_id="bench",
)


@dataclass(frozen=True)
class Transfer:
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


async def _sink() -> tuple[asyncio.Server, int, asyncio.Queue[int]]:
    totals: asyncio.Queue[int] = asyncio.Queue()

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while data := await reader.read(1024 * 1024):
            total += len(data)
        writer.close()
        await totals.put(total)

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], totals


async def _send(writer: asyncio.StreamWriter, size: int) -> None:
    block = b"\x5a" * CHUNK
    sent = 0
    while sent < size:
        writer.write(block)
        await writer.drain()
        sent += len(block)
    writer.write_eof()


async def direct(size: int) -> Transfer:
    server, port, totals = await _sink()
    start = time.perf_counter()
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _send(writer, size)
    received = await asyncio.wait_for(totals.get(), 120)
    elapsed = time.perf_counter() - start
    writer.close()
    server.close()
    assert received == size, (received, size)
    return Transfer(size, elapsed)


async def tunnelled(size: int) -> Transfer:
    server, port, totals = await _sink()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manager.socket"
        grpc_server = await serve_unix(
            [
                ManagerService(
                    sessions=SessionRegistry(ttl=60),
                    network=NETWORK,
                    dial_timeout=5,
                    idle_timeout=60,
                )
            ],
            path,
        )
        channel = unix_channel(path)
        app_side, relay_side = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=relay_side)
        _app_reader, app_writer = await asyncio.open_connection(sock=app_side)
        start = time.perf_counter()
        target = Destination("127.0.0.1", port)
        async with (
            ManagerClient(channel).dial("bench", target, 60) as stream,
            asyncio.TaskGroup() as group,
        ):
            group.create_task(_send(app_writer, size))
            group.create_task(relay(stream, reader, writer, idle_timeout=60))
        received = await asyncio.wait_for(totals.get(), 120)
        elapsed = time.perf_counter() - start
        app_writer.close()
        channel.close()
        grpc_server.close()
        await grpc_server.wait_closed()
    server.close()
    assert received == size, (received, size)
    return Transfer(size, elapsed)
