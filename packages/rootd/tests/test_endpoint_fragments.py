"""The endpoint with IP fragments, and a bounded fuzz of its packet path.

Scenarios: a UDP datagram the workstation's kernel split into fragments (any order,
duplicated) reaches the relay once and byte-exact; a fragmented TCP SYN is answered; an
answer larger than the MTU goes back as valid IPv4 fragments (IPv6: Fragment headers, both
ways) (with and without the vnet
header and checksum offload) that reassemble to the exact datagram with a correct UDP
checksum; partial datagrams time out on the endpoint's timer; fragment drops are counted
and logged at most once per interval; and random malformed traffic (truncated headers, bad
lengths and checksums, odd TCP flags, fragment floods) never raises and keeps the
reassembly memory within its bound while real flows keep working.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import struct
import time

import pytest

from kubepresence.rootd.core.endpoint import DatagramReceived, EndpointConfig, NetworkEndpoint
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.fragments import (
    PIECE_OVERHEAD,
    Reassembler,
    ReassemblyLimits,
    fragment_ipv4,
    fragment_ipv6,
    ipv6_fragment_header,
)
from kubepresence.rootd.core.packets import (
    ACK,
    FIN,
    IPV4_HEADER,
    NO_VNET_HEADER,
    PROTO_UDP,
    PSH,
    RST,
    SYN,
    URG,
    VNET_HEADER_SIZE,
    OutputMode,
    internet_checksum,
    packet_bytes,
    parse_ip,
    parse_udp,
)
from kubepresence.rootd.core.tcp import DataReceived
from kubepresence.rootd.core.testing import ScriptedClient, parse_written

ROUTED = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:2::/48")]


def make(**config: object) -> tuple[NetworkEndpoint, list[FlowId]]:
    asked: list[FlowId] = []

    def accept(flow: FlowId) -> bool:
        asked.append(flow)
        return True

    endpoint = NetworkEndpoint(
        ROUTED,
        accept,
        EndpointConfig(**config),  # type: ignore[arg-type]
        initial_sequence=lambda: 1000,
    )
    return endpoint, asked


def with_ident(packet: bytes, ident: int) -> bytes:
    fixed = bytearray(packet)
    fixed[4:6] = struct.pack("!H", ident)
    fixed[10:12] = b"\0\0"
    fixed[10:12] = struct.pack("!H", internet_checksum(bytes(fixed[:20])))
    return bytes(fixed)


def udp_checksum_ok(packet: bytes) -> bool:
    ip = parse_ip(memoryview(packet))
    transport = bytes(ip.transport)
    pseudo = ip.source + ip.destination + struct.pack("!BBH", 0, PROTO_UDP, len(transport))
    return internet_checksum(pseudo + transport + (b"\0" if len(transport) & 1 else b"")) == 0


@pytest.mark.parametrize("size", [1473, 8192, 26000, 65000, 65507])
def test_fragmented_datagram_reaches_the_relay_whole(size: int) -> None:
    endpoint, asked = make()
    client = ScriptedClient(source_port=40001, destination="198.18.0.9", destination_port=9001)
    payload = random.Random(size).randbytes(size)
    pieces = fragment_ipv4(with_ident(client.udp(payload), 77), 1500)
    order = list(reversed(pieces))
    order.insert(1, pieces[-1])  # a duplicate
    for piece in order:
        endpoint.receive(piece, 0.0)
    events = endpoint.take_events()
    assert events == [DatagramReceived(asked[0], payload)]
    assert len(asked) == 1
    assert endpoint.stats.fragments.reassembled == 1
    assert endpoint.stats.fragments.duplicates == 1
    assert endpoint.reassembly_buffered == 0


def test_fragmented_tcp_segment_is_delivered() -> None:
    endpoint, _ = make()
    client = ScriptedClient(destination="198.18.0.10", destination_port=80)
    endpoint.receive(client.syn(5000), 0.0)
    (syn_ack,) = endpoint.flush(0.0)
    reply = parse_written(syn_ack)
    assert reply.tcp is not None
    assert reply.tcp.flags == SYN | ACK
    endpoint.receive(client.tcp(5001, reply.tcp.seq + 1, ACK), 0.0)
    endpoint.take_events()
    data = bytes(range(100))
    segment = client.tcp(5001, reply.tcp.seq + 1, ACK | PSH, data)
    pieces = fragment_ipv4(with_ident(segment, 3), 68)
    assert len(pieces) == 3
    for piece in reversed(pieces):
        endpoint.receive(piece, 0.0)
    received = [e for e in endpoint.take_events() if isinstance(e, DataReceived)]
    assert [bytes(e.data) for e in received] == [data]


@pytest.mark.parametrize(
    "output",
    [OutputMode(), OutputMode(True), OutputMode(True, True), OutputMode(True, True, True)],
    ids=["plain", "vnet", "offload", "gso"],
)
@pytest.mark.parametrize("size", [1472, 1473, 8192, 65507])
def test_answers_beyond_the_mtu_go_back_as_fragments(output: OutputMode, size: int) -> None:
    endpoint, asked = make(output=output)
    client = ScriptedClient(source_port=40002, destination="198.18.0.9", destination_port=9001)
    endpoint.receive((NO_VNET_HEADER if output.vnet_header else b"") + client.udp(b"q"), 0.0)
    endpoint.take_events()
    answer = random.Random(-size).randbytes(size)
    endpoint.send_datagram(asked[0], answer)
    packets = [packet_bytes(p) for p in endpoint.flush(0.0)]
    if output.vnet_header:
        assert all(len(p) > VNET_HEADER_SIZE for p in packets)
        if size > 1472:
            assert all(p.startswith(NO_VNET_HEADER) for p in packets)
        packets = [p[VNET_HEADER_SIZE:] for p in packets]
    assert all(len(p) <= 1500 for p in packets)
    if size <= 1472:
        (packet,) = packets
        udp = parse_udp(parse_ip(memoryview(packet)).transport)
        assert bytes(udp.payload) == answer
        return
    assert endpoint.stats.fragments_sent == len(packets) == -(-(size + 8) // 1480)
    idents = {IPV4_HEADER.unpack(p[:20])[3] for p in packets}
    assert len(idents) == 1
    reassembler = Reassembler(ReassemblyLimits())
    wholes = [reassembler.add(memoryview(p), 0.0) for p in packets]
    whole = wholes[-1]
    assert whole is not None
    assert udp_checksum_ok(whole)
    udp = parse_udp(parse_ip(memoryview(whole)).transport)
    assert (udp.source_port, udp.destination_port) == (9001, 40002)
    assert bytes(udp.payload) == answer


def test_each_fragmented_answer_has_its_own_identification() -> None:
    endpoint, asked = make()
    client = ScriptedClient(source_port=40003, destination="198.18.0.9", destination_port=9001)
    endpoint.receive(client.udp(b"q"), 0.0)
    endpoint.send_datagram(asked[0], bytes(3000))
    endpoint.send_datagram(asked[0], bytes(3000))
    idents = [IPV4_HEADER.unpack(packet_bytes(p)[:20])[3] for p in endpoint.flush(0.0)]
    assert len(set(idents)) == 2


def test_partial_datagrams_expire_on_the_endpoint_timer() -> None:
    endpoint, _ = make(reassembly=ReassemblyLimits(timeout=30.0))
    client = ScriptedClient(source_port=40004, destination="198.18.0.9", destination_port=9001)
    pieces = fragment_ipv4(with_ident(client.udp(bytes(4000)), 5), 1500)
    endpoint.receive(pieces[0], 100.0)
    assert endpoint.reassembly_buffered > 0
    assert endpoint.next_deadline() == 130.0
    endpoint.on_timer(130.0)
    assert endpoint.reassembly_buffered == 0
    assert endpoint.stats.fragments.timed_out == 1
    assert endpoint.next_deadline() is None


def test_fragment_drops_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    endpoint, _ = make(drop_log_interval=10.0)
    caplog.set_level(logging.WARNING, logger="kubepresence.rootd.core.endpoint")
    client = ScriptedClient(source_port=40005, destination="198.18.0.9", destination_port=9001)

    def overlap(ident: int, now: float) -> None:
        pieces = fragment_ipv4(with_ident(client.udp(bytes(3000)), ident), 1500)
        endpoint.receive(pieces[0], now)
        changed = bytearray(pieces[0])
        changed[-1] ^= 0xFF
        endpoint.receive(bytes(changed), now)

    overlap(1, 0.0)
    overlap(2, 1.0)
    overlap(3, 2.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "dropped 1 IP fragment(s) or datagram(s) since the last report (totals: overlapping=1)"
    ]
    # The first fragment at 10 s reports what accumulated; the drop right after it waits.
    overlap(4, 10.0)
    assert [r.getMessage() for r in caplog.records][1:] == [
        "dropped 2 IP fragment(s) or datagram(s) since the last report (totals: overlapping=3)"
    ]
    assert endpoint.stats.fragments.overlapping == 4


@pytest.mark.parametrize("output", [OutputMode(), OutputMode(True, True)], ids=["plain", "offload"])
def test_ipv6_datagrams_beyond_the_mtu_both_ways(output: OutputMode) -> None:
    endpoint, asked = make(output=output)
    client = ScriptedClient(
        source="fd00::2", source_port=40010, destination="2001:2::9", destination_port=9001
    )
    prefix = NO_VNET_HEADER if output.vnet_header else b""
    payload = random.Random(6).randbytes(20000)
    pieces = fragment_ipv6(client.udp(payload), 1500, ident=99)
    for piece in reversed(pieces):
        endpoint.receive(prefix + piece, 0.0)
    assert endpoint.take_events() == [DatagramReceived(asked[0], payload)]
    answer = random.Random(7).randbytes(30000)
    endpoint.send_datagram(asked[0], answer)
    packets = [packet_bytes(p)[len(prefix) :] for p in endpoint.flush(0.0)]
    assert all(len(p) <= 1500 for p in packets)
    assert len(packets) == -(-(30000 + 8) // 1448)
    reassembler = Reassembler()
    results = []
    for packet in packets:
        view = memoryview(packet)
        at = ipv6_fragment_header(view)
        assert at == 40
        results.append(reassembler.add_ipv6(view, at, 0.0))
    whole = results[-1]
    assert whole is not None
    assert udp_checksum_ok(whole)
    assert bytes(parse_udp(parse_ip(memoryview(whole)).transport).payload) == answer


# -- fuzz ---------------------------------------------------------------------------------

FUZZ_PACKETS = 100_000
FUZZ_SECONDS = 20.0


def _mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    choice = rng.randrange(8)
    if choice == 0 and data:  # truncated
        return bytes(data[: rng.randrange(len(data))])
    if choice == 1 and len(data) >= 4:  # bad total length
        data[2:4] = struct.pack("!H", rng.randrange(65536))
    elif choice == 2 and len(data) >= 12:  # bad header checksum
        data[10] ^= 0xFF
    elif choice == 3 and len(data) >= 1:  # bad version or header length
        data[0] = rng.randrange(256)
    elif choice == 4 and len(data) >= 34:  # odd TCP flags / data offset
        data[33] = rng.randrange(256)
        data[32] = rng.randrange(256)
    elif choice == 5:  # random bytes flipped
        for _ in range(rng.randrange(1, 6)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == 6 and len(data) >= 8:  # fragment bits
        data[6:8] = struct.pack("!H", rng.randrange(65536))
    return bytes(data)


def _fragment_flood(rng: random.Random) -> bytes:
    """A random IPv4 fragment to a routed address: new ids, overlaps, tiny pieces."""
    length = rng.choice([0, 1, 8, 16, 512, 1480])
    flags = (0x2000 if rng.random() < 0.8 else 0) | rng.randrange(8192)
    header = IPV4_HEADER.pack(
        0x45,
        0,
        20 + length,
        rng.randrange(65536),
        flags,
        64,
        rng.choice([1, 6, 17, 47]),
        0,
        bytes([10, 1, rng.randrange(4), 2]),
        bytes([198, 18, 0, 9]),
    )
    return header + rng.randbytes(length)


def test_fuzzed_packets_never_raise_and_memory_stays_bounded() -> None:
    limits = ReassemblyLimits(max_datagrams=32, max_buffered=1 << 20)
    endpoint, _ = make(reassembly=limits)
    rng = random.Random(1414)
    tcp = ScriptedClient(source_port=41000, destination="198.18.0.10", destination_port=80)
    udp = ScriptedClient(source_port=41001, destination="198.18.0.9", destination_port=9001)
    udp6 = ScriptedClient(
        source="fd00::2", source_port=41002, destination="2001:2::9", destination_port=9001
    )
    seeds = [
        tcp.syn(1),
        tcp.tcp(2, 1001, ACK | PSH, b"hello"),
        tcp.tcp(2, 1001, FIN | URG | RST | SYN, b"x"),
        udp.udp(b"ping"),
        udp6.udp(b"ping6"),
        udp.icmp(8, 0, b"\0\1\0\1abc"),
        *fragment_ipv4(with_ident(udp.udp(bytes(3000)), 9), 1500),
        *fragment_ipv6(udp6.udp(bytes(3000)), 1280, ident=5),
    ]
    started = time.monotonic()
    now = 0.0
    count = 0
    while count < FUZZ_PACKETS and time.monotonic() - started < FUZZ_SECONDS:
        count += 1
        now += 0.001
        kind = rng.random()
        if kind < 0.4:
            packet = _fragment_flood(rng)
        elif kind < 0.9:
            packet = _mutate(rng, rng.choice(seeds))
        else:
            packet = rng.randbytes(rng.randrange(64))
        endpoint.receive(packet, now)  # must never raise
        endpoint.flush(now)
        endpoint.take_events()
        if count % 500 == 0:
            deadline = endpoint.next_deadline()
            if deadline is not None and deadline <= now:
                endpoint.on_timer(now)
        assert endpoint.reassembly_buffered <= limits.max_buffered
    assert count == FUZZ_PACKETS, f"only {count} packets in {FUZZ_SECONDS} s"
    stats = endpoint.stats
    assert stats.malformed + stats.unsupported + stats.fragments.dropped > count // 4
    assert stats.fragments.reassembled >= 0
    assert endpoint.stats.fragments.evicted > 0  # the flood did reach the bounds
    # After the flood, a real fragmented datagram still arrives whole.
    payload = bytes(range(256)) * 20
    for piece in fragment_ipv4(with_ident(udp.udp(payload), 4242), 1500):
        endpoint.receive(piece, now)
    assert any(
        isinstance(event, DatagramReceived) and event.data == payload
        for event in endpoint.take_events()
    )
    endpoint.on_timer(now + limits.timeout)
    assert endpoint.reassembly_buffered == 0
    assert PIECE_OVERHEAD > 0
