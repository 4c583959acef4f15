"""The asyncio terminator end to end without root: a SOCK_SEQPACKET socket pair stands in
for the TUN device (one packet per message, like a TUN descriptor), the scripted client
sends the kernel's packets, and a relay echoes through `TcpStream`.

Scenarios: a TCP connection echoed, refusal and UDP, a failing device, a fragmented UDP
datagram echoed back in fragments, and a relay's late decision after the terminator stopped
(at disconnect) ignored instead of raising."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator

import pytest
from kptest.waiting import eventually

from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.fragments import Reassembler, fragment_ipv4
from kubepresence.rootd.core.packets import ACK, FIN, SYN, TcpSegment, internet_checksum
from kubepresence.rootd.core.testing import ScriptedClient, parse_written
from kubepresence.rootd.net.streams import TcpStream
from kubepresence.rootd.net.terminating import Terminator
from kubepresence.rootd.net.tun import Offload, TunDevice

ROUTED = [ipaddress.ip_network("198.18.0.0/15")]


class EchoRelay:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.datagrams: list[tuple[FlowId, bytes]] = []
        self.terminator: Terminator | None = None

    def accept(self, flow: FlowId) -> bool | None:
        return flow.destination_port != 1

    def tcp_connected(self, stream: TcpStream) -> None:
        task = asyncio.create_task(self._echo(stream))
        self.tasks.add(task)

    async def _echo(self, stream: TcpStream) -> None:
        while data := await stream.read():
            await stream.write(data.upper())
        stream.close()

    def datagram(self, flow: FlowId, data: bytes) -> None:
        self.datagrams.append((flow, data))
        assert self.terminator is not None
        self.terminator.send_datagram(flow, data[::-1])

    def datagram_flow_closed(self, flow: FlowId) -> None:
        pass


class Wire:
    """The kernel's end of the fake TUN."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def send(self, packet: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, packet)

    async def receive_tcp(self) -> TcpSegment:
        data = await asyncio.wait_for(
            asyncio.get_running_loop().sock_recv(self.sock, 70000), timeout=5
        )
        segment = parse_written([data]).tcp
        assert segment is not None
        return segment


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Terminator, EchoRelay, Wire]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    device = TunDevice(ours.fileno(), "fake0", Offload(False, False, False))
    relay = EchoRelay()
    terminator = Terminator(device, ROUTED, initial_sequence=lambda: 1000)
    relay.terminator = terminator
    terminator.start(relay)
    try:
        yield terminator, relay, Wire(theirs)
    finally:
        terminator.stop()
        for task in relay.tasks:
            task.cancel()
        ours.close()
        theirs.close()


async def test_a_connection_is_echoed_through_a_tcp_stream(
    setup: tuple[Terminator, EchoRelay, Wire],
) -> None:
    terminator, _, wire = setup
    client = ScriptedClient()
    await wire.send(client.syn(5000))
    syn_ack = await wire.receive_tcp()
    assert syn_ack.flags == SYN | ACK
    await wire.send(client.tcp(5001, 1001, ACK | FIN, b"hello"))
    received = b""
    fin = False
    for _ in range(10):
        segment = await wire.receive_tcp()
        received += bytes(segment.payload)
        fin = fin or bool(segment.flags & FIN)
        if fin:
            break
    assert received == b"HELLO"
    assert fin
    await wire.send(client.tcp(5007, 1001 + 5 + 1))
    await eventually(lambda: not terminator.endpoint.tcp_connections, "the connection closed")
    assert terminator.endpoint.tcp_connections == []


async def test_refusal_and_udp(setup: tuple[Terminator, EchoRelay, Wire]) -> None:
    _, relay, wire = setup
    await wire.send(ScriptedClient(destination_port=1).syn(5000))
    rst = await wire.receive_tcp()
    assert rst.flags & 0x04
    await wire.send(ScriptedClient(destination_port=53).udp(b"abc"))
    data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(wire.sock, 2000), 5)
    reply = parse_written([data]).udp
    assert reply is not None
    assert bytes(reply.payload) == b"cba"
    assert [data for _, data in relay.datagrams] == [b"abc"]


async def test_a_failing_device_stops_the_terminator(
    setup: tuple[Terminator, EchoRelay, Wire],
) -> None:
    terminator, _, wire = setup
    wire.sock.close()  # the "device" goes away: reads hit end of file
    await asyncio.wait_for(terminator.stopped.wait(), 5)
    assert terminator.error is not None


async def test_a_fragmented_datagram_is_echoed_in_fragments(
    setup: tuple[Terminator, EchoRelay, Wire],
) -> None:
    _, relay, wire = setup
    client = ScriptedClient(destination_port=53)
    payload = bytes(range(256)) * 32
    packet = bytearray(client.udp(payload))
    packet[4:6] = b"\x12\x34"
    packet[10:12] = b"\0\0"
    packet[10:12] = internet_checksum(bytes(packet[:20])).to_bytes(2, "big")
    for piece in fragment_ipv4(packet, 1500):
        await wire.send(piece)
    reassembler = Reassembler()
    whole = None
    for _ in range(10):
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(wire.sock, 2000), 5)
        assert len(data) <= 1500
        whole = reassembler.add(memoryview(data), 0.0)
        if whole is not None:
            break
    assert whole is not None
    reply = parse_written([whole]).udp
    assert reply is not None
    assert bytes(reply.payload) == payload[::-1]
    assert [data for _, data in relay.datagrams] == [payload]


async def test_a_late_decision_after_stop_is_ignored(
    setup: tuple[Terminator, EchoRelay, Wire],
) -> None:
    """A relay whose dial is cancelled at disconnect answers after the terminator stopped."""
    terminator, _, _ = setup
    terminator.stop()
    flow = FlowId(
        6,
        ipaddress.ip_address("10.1.0.2"),
        40000,
        ipaddress.ip_address("198.18.0.10"),
        80,
    )
    assert terminator.decide(flow, False) is False
