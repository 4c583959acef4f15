"""Packet parsing and building: fields, checksums (against a word-by-word reference),
virtio_net_hdr offload and GSO framing, and robustness against arbitrary bytes."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.rootd.core.errors import RemoteProtocolError
from kubepresence.rootd.core.packets import (
    ACK,
    PROTO_TCP,
    PROTO_UDP,
    PSH,
    SYN,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_NONE,
    VNET_GSO_TCPV4,
    VNET_GSO_TCPV6,
    MalformedPacketError,
    OutputMode,
    PacketWriter,
    UnsupportedPacketError,
    VnetHeader,
    internet_checksum,
    packet_bytes,
    parse_icmp,
    parse_ip,
    parse_tcp,
    parse_udp,
    parse_vnet_header,
    tcp_syn_options,
)

V4_A = ipaddress.ip_address("10.1.0.2").packed
V4_B = ipaddress.ip_address("198.18.0.10").packed
V6_A = ipaddress.ip_address("2001:2::2").packed
V6_B = ipaddress.ip_address("2001:2::10").packed


def reference_checksum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way: 16-bit words, end-around carry, complement."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(source: bytes, destination: bytes, protocol: int, length: int) -> bytes:
    if len(source) == 4:
        return source + destination + struct.pack("!BBH", 0, protocol, length)
    return source + destination + struct.pack("!IxxxB", length, protocol)


def transport_checksum_ok(packet: bytes) -> bool:
    ip = parse_ip(memoryview(packet))
    segment = bytes(ip.transport)
    pseudo = pseudo_header(ip.source, ip.destination, ip.protocol, len(segment))
    return reference_checksum(pseudo + segment) == 0


@pytest.mark.parametrize("payload", [b"", b"x", b"hello world!", bytes(range(256)) * 6])
@pytest.mark.parametrize(("source", "destination"), [(V4_A, V4_B), (V6_A, V6_B)])
def test_tcp_packets_carry_valid_checksums(
    payload: bytes, source: bytes, destination: bytes
) -> None:
    writer = PacketWriter(source, destination, OutputMode())
    packet = packet_bytes(
        writer.tcp(40000, 80, 0xFFFFFFF0, 12345, ACK | PSH, 5000, [payload[:3], payload[3:]])
    )
    assert transport_checksum_ok(packet)
    ip = parse_ip(memoryview(packet))
    assert (ip.source, ip.destination, ip.protocol) == (source, destination, PROTO_TCP)
    if ip.version == 4:
        assert reference_checksum(bytes(ip.header)) == 0
    segment = parse_tcp(ip.transport)
    assert (segment.source_port, segment.destination_port) == (40000, 80)
    assert (segment.seq, segment.ack, segment.flags, segment.window) == (
        0xFFFFFFF0,
        12345,
        ACK | PSH,
        5000,
    )
    assert bytes(segment.payload) == payload


@pytest.mark.parametrize(("source", "destination"), [(V4_A, V4_B), (V6_A, V6_B)])
def test_udp_packets_carry_valid_checksums(source: bytes, destination: bytes) -> None:
    writer = PacketWriter(source, destination, OutputMode())
    for payload in (b"", b"a", b"dns query bytes"):
        packet = packet_bytes(writer.udp(5353, 53, payload))
        assert transport_checksum_ok(packet)
        datagram = parse_udp(parse_ip(memoryview(packet)).transport)
        assert (datagram.source_port, datagram.destination_port) == (5353, 53)
        assert bytes(datagram.payload) == payload


def test_a_udp_checksum_of_zero_is_sent_as_all_ones() -> None:
    writer = PacketWriter(V4_A, V4_B, OutputMode())
    # Find a payload whose checksum computes to 0: the field must then read 0xFFFF.
    for filler in range(70000):
        packet = packet_bytes(writer.udp(1, 2, struct.pack("!I", filler)))
        field = struct.unpack_from("!H", packet, 20 + 6)[0]
        assert field != 0
        if field == 0xFFFF:
            assert transport_checksum_ok(packet)
            return
    pytest.fail("no payload with a zero checksum found")


@pytest.mark.parametrize(("source", "destination"), [(V4_A, V4_B), (V6_A, V6_B)])
def test_icmp_checksums(source: bytes, destination: bytes) -> None:
    writer = PacketWriter(source, destination, OutputMode())
    packet = packet_bytes(writer.icmp(0 if len(source) == 4 else 129, 0, b"\x12\x34\x00\x01ping"))
    ip = parse_ip(memoryview(packet))
    if ip.version == 4:
        assert reference_checksum(bytes(ip.transport)) == 0
    else:
        assert transport_checksum_ok(packet)
    message = parse_icmp(ip.transport)
    assert bytes(message.rest) == b"\x12\x34\x00\x01ping"


@pytest.mark.parametrize(
    ("source", "destination", "gso_type"),
    [(V4_A, V4_B, VNET_GSO_TCPV4), (V6_A, V6_B, VNET_GSO_TCPV6)],
)
def test_checksum_offload_and_gso_framing(source: bytes, destination: bytes, gso_type: int) -> None:
    writer = PacketWriter(source, destination, OutputMode(True, True, True))
    payload = bytes(range(256)) * 20  # 5120 bytes: more than one MSS of 1460
    packet = packet_bytes(writer.tcp(1, 2, 100, 200, ACK, 1000, [payload], b"", 1460))
    vnet = parse_vnet_header(packet)
    ip_size = 20 if len(source) == 4 else 40
    assert vnet == VnetHeader(VNET_F_NEEDS_CSUM, gso_type, ip_size + 20, 1460, ip_size, 16)
    # What the kernel does: sum from csum_start to the end, the partial sum in the field.
    wire = packet[10:]
    completed = internet_checksum(wire[ip_size:])
    reference = bytearray(wire)
    struct.pack_into("!H", reference, ip_size + 16, 0)
    ip = parse_ip(memoryview(bytes(reference)))
    pseudo = pseudo_header(source, destination, PROTO_TCP, len(wire) - ip_size)
    assert completed == reference_checksum(pseudo + bytes(ip.transport))
    # One MSS or less: no GSO, still offloaded.
    small = packet_bytes(writer.tcp(1, 2, 100, 200, ACK, 1000, [payload[:1000]], b"", 1460))
    assert parse_vnet_header(small).gso_type == VNET_GSO_NONE


def test_udp_offload_framing() -> None:
    writer = PacketWriter(V4_A, V4_B, OutputMode(True, True))
    packet = packet_bytes(writer.udp(1, 2, b"abc"))
    vnet = parse_vnet_header(packet)
    assert (vnet.flags, vnet.checksum_start, vnet.checksum_offset) == (VNET_F_NEEDS_CSUM, 20, 6)
    assert internet_checksum(packet[10 + 20 :]) == reference_checksum(
        pseudo_header(V4_A, V4_B, PROTO_UDP, 11) + packet[30:36] + b"\0\0" + packet[38:]
    )


def test_vnet_header_without_offload_is_all_zero() -> None:
    writer = PacketWriter(V4_A, V4_B, OutputMode(vnet_header=True))
    packet = packet_bytes(writer.tcp(1, 2, 3, 4, ACK, 5))
    assert packet[:10] == bytes(10)
    assert transport_checksum_ok(packet[10:])


def test_output_mode_rejects_impossible_combinations() -> None:
    with pytest.raises(ValueError, match="vnet"):
        OutputMode(checksum_offload=True)
    with pytest.raises(ValueError, match="GSO"):
        OutputMode(vnet_header=True, gso=True)


def test_syn_options_are_decoded() -> None:
    writer = PacketWriter(V4_A, V4_B, OutputMode())
    options = (
        tcp_syn_options(1400, 9)
        + b"\x04\x02"  # SACK permitted
        + b"\x08\x0a"
        + bytes(8)  # timestamps
        + b"\x01\x01"
    )
    packet = packet_bytes(writer.tcp(1, 2, 3, 0, SYN, 5, (), options))
    segment = parse_tcp(parse_ip(memoryview(packet)).transport)
    assert (segment.mss, segment.window_scale) == (1400, 9)
    assert segment.sequence_length == 1


def test_options_on_non_syn_segments_are_skipped() -> None:
    writer = PacketWriter(V4_A, V4_B, OutputMode())
    packet = packet_bytes(writer.tcp(1, 2, 3, 0, ACK, 5, [b"data"], tcp_syn_options(1400, 9)))
    segment = parse_tcp(parse_ip(memoryview(packet)).transport)
    assert segment.mss is None
    assert bytes(segment.payload) == b"data"


def valid_tcp_packet() -> bytes:
    writer = PacketWriter(V4_A, V4_B, OutputMode())
    return packet_bytes(writer.tcp(1, 2, 3, 4, SYN, 5, [b"payload"], tcp_syn_options(1460, 7)))


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda p: b"", MalformedPacketError),
        (lambda p: p[:19], MalformedPacketError),
        (lambda p: b"\x55" + p[1:], MalformedPacketError),  # version 5
        (lambda p: b"\x44" + p[1:], MalformedPacketError),  # IHL 4
        (lambda p: p[:2] + b"\xff\xff" + p[4:], MalformedPacketError),  # total > buffer
        (lambda p: p[:2] + b"\x00\x10" + p[4:], MalformedPacketError),  # total < header
        (lambda p: p[:6] + b"\x20\x00" + p[8:], UnsupportedPacketError),  # more fragments
        (lambda p: p[:6] + b"\x00\x10" + p[8:], UnsupportedPacketError),  # fragment offset
    ],
)
def test_malformed_ip_is_rejected(mutate: object, error: type[Exception]) -> None:
    packet = mutate(valid_tcp_packet())  # type: ignore[operator]
    with pytest.raises(error):
        parse_ip(memoryview(packet))


def test_malformed_transport_is_rejected() -> None:
    with pytest.raises(MalformedPacketError):
        parse_tcp(memoryview(bytes(19)))
    header = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x40, 0, 0, 0, 0)  # data offset 16
    with pytest.raises(MalformedPacketError):
        parse_tcp(memoryview(header))
    header = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0xF0, SYN, 0, 0, 0)  # 60 > 20 bytes
    with pytest.raises(MalformedPacketError):
        parse_tcp(memoryview(header))
    bad_option = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x60, SYN, 0, 0, 0) + b"\x02\x09\x00\x00"
    with pytest.raises(MalformedPacketError):
        parse_tcp(memoryview(bad_option))
    with pytest.raises(MalformedPacketError):
        parse_udp(memoryview(struct.pack("!HHHH", 1, 2, 50, 0)))
    with pytest.raises(MalformedPacketError):
        parse_icmp(memoryview(b"\x08\x00"))
    with pytest.raises(MalformedPacketError):
        parse_vnet_header(b"\x00" * 9)


def test_ipv6_extension_headers_are_stepped_over_and_fragments_refused() -> None:
    writer = PacketWriter(V6_A, V6_B, OutputMode())
    packet = bytearray(packet_bytes(writer.udp(1, 2, b"abc")))
    udp = bytes(packet[40:])
    hop_by_hop = bytes((PROTO_UDP, 0)) + bytes(6)
    with_extension = bytearray(packet[:40]) + hop_by_hop + udp
    struct.pack_into("!H", with_extension, 4, len(hop_by_hop) + len(udp))
    with_extension[6] = 0
    ip = parse_ip(memoryview(bytes(with_extension)))
    assert ip.protocol == PROTO_UDP
    assert bytes(parse_udp(ip.transport).payload) == b"abc"
    fragment = bytearray(with_extension)
    fragment[6] = 44
    with pytest.raises(UnsupportedPacketError):
        parse_ip(memoryview(bytes(fragment)))


def parse_everything(data: bytes) -> None:
    view = memoryview(data)
    try:
        ip = parse_ip(view)
        parse_tcp(ip.transport)
    except RemoteProtocolError:
        pass
    for parser in (parse_tcp, parse_udp, parse_icmp):
        with contextlib.suppress(RemoteProtocolError):
            parser(view)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    parse_everything(data)
    parse_everything(b"\x45" + data)
    parse_everything(b"\x60" + data)


@given(st.integers(0, 80), st.integers(0, 255))
def test_any_single_byte_corruption_raises_only_protocol_errors(index: int, value: int) -> None:
    packet = bytearray(valid_tcp_packet())
    packet[index % len(packet)] = value
    parse_everything(bytes(packet))
