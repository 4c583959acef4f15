"""Test doubles for the network core: a scripted TCP/UDP client and an imperfect link.

Like grpclib's in-memory channel, these live next to the code they exercise so that unit
tests, property tests and benchmarks drive the endpoint the same way: `ScriptedClient` plays
the workstation's kernel (it builds the packets a client would send and parses what the
endpoint answers), and `ImperfectLink` carries packets one way with seeded loss,
duplication, reordering and delay. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass

from kubepresence.rootd.core.packets import (
    ACK,
    PROTO_TCP,
    PROTO_UDP,
    SYN,
    VNET_HEADER_SIZE,
    Chunk,
    IcmpMessage,
    IpPacket,
    OutputMode,
    PacketWriter,
    TcpSegment,
    UdpDatagram,
    packet_bytes,
    parse_icmp,
    parse_ip,
    parse_tcp,
    parse_udp,
    tcp_syn_options,
)


@dataclass(frozen=True, slots=True)
class Received:
    """A packet the endpoint wrote, parsed: the IP layer and the transport part."""

    ip: IpPacket
    tcp: TcpSegment | None
    udp: UdpDatagram | None
    icmp: IcmpMessage | None


def parse_written(packet: Sequence[Chunk], vnet_header: bool = False) -> Received:
    """Parse a packet as the endpoint wrote it (a list of buffers)."""
    view = memoryview(packet_bytes(packet))
    if vnet_header:
        view = view[VNET_HEADER_SIZE:]
    ip = parse_ip(view)
    if ip.protocol == PROTO_TCP:
        return Received(ip, parse_tcp(ip.transport), None, None)
    if ip.protocol == PROTO_UDP:
        return Received(ip, None, parse_udp(ip.transport), None)
    return Received(ip, None, None, parse_icmp(ip.transport))


class ScriptedClient:
    """The local client's side of one 5-tuple: builds the packets a kernel would send."""

    def __init__(
        self,
        source: str = "10.1.0.2",
        source_port: int = 40000,
        destination: str = "198.18.0.10",
        destination_port: int = 80,
    ) -> None:
        self.source = ipaddress.ip_address(source)
        self.destination = ipaddress.ip_address(destination)
        self.source_port = source_port
        self.destination_port = destination_port
        self._writer = PacketWriter(self.source.packed, self.destination.packed, OutputMode())

    def tcp(
        self,
        seq: int,
        ack: int = 0,
        flags: int = ACK,
        payload: bytes = b"",
        window: int = 65535,
        options: bytes = b"",
    ) -> bytes:
        """A TCP segment from the client (complete checksums, no vnet header)."""
        parts: list[Chunk] = [payload] if payload else []
        return packet_bytes(
            self._writer.tcp(
                self.source_port,
                self.destination_port,
                seq & 0xFFFFFFFF,
                ack & 0xFFFFFFFF,
                flags,
                window,
                parts,
                options,
            )
        )

    def syn(
        self, seq: int, mss: int | None = 1460, window_scale: int | None = 7, window: int = 65535
    ) -> bytes:
        """The client's SYN with the given options (None leaves an option out)."""
        options = b""
        if mss is not None:
            options = tcp_syn_options(mss, window_scale)
        elif window_scale is not None:
            options = bytes((1, 3, 3, window_scale))
        return self.tcp(seq, 0, SYN, b"", window, options)

    def udp(self, payload: bytes) -> bytes:
        """A UDP datagram from the client."""
        return packet_bytes(self._writer.udp(self.source_port, self.destination_port, payload))

    def icmp(self, type_: int, code: int, body: bytes) -> bytes:
        """An ICMP message from the client."""
        return packet_bytes(self._writer.icmp(type_, code, body))


class ImperfectLink:
    """One direction of a link with seeded loss, duplication, reordering and delay."""

    def __init__(
        self,
        rng: random.Random,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.001,
    ) -> None:
        self._rng = rng
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.delay = delay
        self._queue: list[tuple[float, int, bytes]] = []
        self._order = 0
        self.carried = 0
        self.dropped = 0

    def put(self, packet: bytes, now: float) -> None:
        """Send a packet at `now`; it may be lost, doubled or overtaken."""
        self.carried += 1
        if self._rng.random() < self.loss:
            self.dropped += 1
            return
        copies = 2 if self._rng.random() < self.duplicate else 1
        for _ in range(copies):
            delay = self.delay
            if self._rng.random() < self.reorder:
                delay += self._rng.random() * 5 * self.delay
            self._order += 1
            heapq.heappush(self._queue, (now + delay, self._order, packet))

    def due(self, now: float) -> list[bytes]:
        """The packets that arrive by `now`, in arrival order."""
        arrived = []
        while self._queue and self._queue[0][0] <= now:
            arrived.append(heapq.heappop(self._queue)[2])
        return arrived

    def next_arrival(self) -> float | None:
        """When the next packet arrives, or None if nothing is in flight."""
        return self._queue[0][0] if self._queue else None
