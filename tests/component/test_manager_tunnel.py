"""Component test: the manager's gRPC service and the user daemon's manager client.

Scenarios:
- userd's client asks the manager for its version over a unix socket (unary, deadline).
- a flow through the manager's DialCluster (a bidi tunnel) reaches a TCP echo server and carries
  4 MiB both ways intact, with half-close handed through;
- dialling a closed port fails fast with a cluster error, not a hang;
- a call to a manager that never answers fails at its deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from kubepresence.protocol.errors import Category, KubepresenceError
from kubepresence.protocol.gen.common import (
    ConnectionId,
    Protocol,
    TunnelControl,
    TunnelControlCode,
    TunnelMessage,
    TunnelOpen,
)
from kubepresence.protocol.gen.google.protobuf import Empty
from kubepresence.protocol.gen.manager import ClientInfo, ManagerStub
from kubepresence.protocol.transport import unix_channel
from kubepresence.userd.rpc.manager import Destination, ManagerClient


@pytest.fixture
async def channel(manager_socket: Path) -> AsyncIterator[Channel]:
    ch = unix_channel(manager_socket)
    yield ch
    ch.close()


async def test_version_over_unix_socket(channel: Channel) -> None:
    version = await ManagerClient(channel).version()
    assert version.count(".") >= 2


async def test_tunnel_carries_bytes_both_ways_and_half_close(
    channel: Channel, echo_flow: Callable[..., Awaitable[tuple[bytes, bytes]]]
) -> None:
    payload, received = await echo_flow(ManagerClient(channel))
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


async def test_dial_to_closed_port_fails_fast(channel: Channel) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ManagerClient(channel)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(KubepresenceError) as caught:
        async with client.dial("session-1", Destination("127.0.0.1", port), 10.0):
            pass
    assert caught.value.category is Category.CLUSTER
    assert "refused" in caught.value.message.lower()
    assert loop.time() - started < 5.0


async def test_deadline_when_manager_never_answers(tmp_path: Path) -> None:
    path = tmp_path / "silent.socket"

    accepted: list[asyncio.StreamWriter] = []

    def accept_and_ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never speaks HTTP/2

    silent = await asyncio.start_unix_server(accept_and_ignore, path=str(path))
    ch = unix_channel(path)
    try:
        with pytest.raises(KubepresenceError) as caught:
            await ManagerClient(ch, timeout=0.5).version()
        assert caught.value.category is Category.CLUSTER
    finally:
        ch.close()
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_client_session_arrive_remain_depart(channel: Channel) -> None:
    stub = ManagerStub(channel, timeout=5)
    info = await stub.get_cluster_info(Empty())
    assert (info.service_subnets, info.dns_service_ip) == (["10.96.0.0/16"], "10.96.0.10")
    session = await stub.arrive_as_client(ClientInfo(name="dev@laptop", version="0.1.0"))
    assert session.session_id.startswith("client-")
    assert session.cluster_id == "test-cluster"
    await stub.remain(session)
    await stub.depart(session)
    with pytest.raises(GRPCError) as caught:  # departed: unknown now
        await stub.remain(session)
    assert caught.value.status is Status.NOT_FOUND
    assert "arrive again" in str(caught.value.message)


async def test_udp_flow_carries_datagrams_both_ways(channel: Channel) -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data.upper(), addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = echo.get_extra_info("sockname")[1]
    opening = TunnelMessage(
        open=TunnelOpen(
            session_id="s",
            connection=ConnectionId(
                protocol=Protocol.UDP, destination_ip=bytes([127, 0, 0, 1]), destination_port=port
            ),
        )
    )
    try:
        async with ManagerClient(channel).dial_cluster_stream() as stream:
            await stream.send_message(opening)
            reply = await stream.recv_message()
            assert reply.control.code == TunnelControlCode.CONNECTED
            for word in (b"one", b"two", b"three"):
                await stream.send_message(TunnelMessage(data=word))
                answer = await asyncio.wait_for(stream.recv_message(), 5)
                assert answer.data == word.upper()
            await stream.send_message(
                TunnelMessage(control=TunnelControl(code=TunnelControlCode.WRITE_CLOSED))
            )
            await stream.end()
    finally:
        echo.close()
