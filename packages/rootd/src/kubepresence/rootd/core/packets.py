"""IP packets on the wire: parsing and building IPv4/IPv6, TCP, UDP and ICMP echo.

Model
-----
The TUN device hands over whole IP packets, optionally preceded by a 10-byte
`virtio_net_hdr` (IFF_VNET_HDR). Parsing is a few `struct.Struct.unpack_from` calls and
`memoryview` slices: no payload byte is copied and no per-byte Python loop runs, so a packet
costs about a microsecond. Anything that does not add up (lengths beyond the buffer, a bad
version, a TCP data offset inside the header) raises `MalformedPacketError`, the peer's fault; IP
features these parsers do not speak (fragments, IPv6 fragment or unknown extension headers)
raise `UnsupportedPacketError`. Nothing else escapes a parser. Fragments never get that far
on the endpoint's path: it reassembles them first (`core/fragments.py`).

Building goes through a `PacketWriter` per address pair: the constant parts of the IPv4
header checksum and of the TCP/UDP pseudo-header sum are added up once, so a segment costs
one `pack` of the headers plus a modulo. A built packet is a list of buffers for
`os.writev`: the headers in one `bytes`, then the payload parts as given (memoryview slices
of the send buffer stay uncopied). With checksum offload (`OutputMode.checksum_offload`) the
TCP/UDP checksum field carries the folded pseudo-header sum and the vnet header asks the
kernel to finish it; with `gso`, a TCP payload longer than the MSS goes out as one
super-segment that the kernel splits.

Checksums are `int.from_bytes(data, "big") % 0xFFFF`: since 2**16 == 1 (mod 0xFFFF), the
big integer of an even-length byte string is congruent to the ones' complement sum of its
16-bit words.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kubepresence.rootd.core.errors import RemoteProtocolError

Chunk = bytes | memoryview
"""One buffer of an outgoing packet; a packet is a list of them, ready for `os.writev`."""

IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
IPV6_HEADER = struct.Struct("!IHBB16s16s")
TCP_HEADER = struct.Struct("!HHIIBBHHH")
UDP_HEADER = struct.Struct("!HHHH")
ICMP_HEADER = struct.Struct("!BBHHH")
VNET_HEADER = struct.Struct("<BBHHHH")
_U16 = struct.Struct("!H")

VNET_HEADER_SIZE = VNET_HEADER.size
VNET_F_NEEDS_CSUM = 1
VNET_F_DATA_VALID = 2
VNET_GSO_NONE = 0
VNET_GSO_TCPV4 = 1
VNET_GSO_UDP = 3
VNET_GSO_TCPV6 = 4

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20

ICMP_ECHO_REPLY = 0
ICMP_UNREACHABLE = 3
ICMP_ECHO_REQUEST = 8
ICMP_PORT_UNREACHABLE = 3
ICMPV6_UNREACHABLE = 1
ICMPV6_PORT_UNREACHABLE = 4
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129

IPV4_HEADER_SIZE = 20
IPV6_HEADER_SIZE = 40
TCP_HEADER_SIZE = 20
UDP_HEADER_SIZE = 8
IPV6_MIN_MTU = 1280
_DEFAULT_TTL = 64
_IPV4_DONT_FRAGMENT = 0x4000
_IPV4_MORE_FRAGMENTS = 0x2000
_IPV4_OFFSET_MASK = 0x1FFF
# IPv6 extension headers we step over; fragments (44) and anything else are unsupported.
_IPV6_SKIPPABLE = frozenset({0, 43, 60})
_IPV6_MAX_EXTENSIONS = 8

_OPT_END = 0
_OPT_NOP = 1
_OPT_MSS = 2
_OPT_WINDOW_SCALE = 3


class MalformedPacketError(RemoteProtocolError):
    """A packet whose fields contradict each other or its length."""


class UnsupportedPacketError(RemoteProtocolError):
    """A well-formed packet using a feature this endpoint does not speak (e.g. fragments)."""


def ones_complement_sum(data: Chunk) -> int:
    """The ones' complement sum of `data` as 16-bit words, unfolded (add these, then fold)."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value


def fold(total: int) -> int:
    """Fold an unfolded sum to 16 bits; a non-zero sum never folds to 0 (it is 0xFFFF)."""
    folded = total % 0xFFFF
    if folded == 0 and total:
        return 0xFFFF
    return folded


def internet_checksum(*parts: Chunk, start: int = 0) -> int:
    """RFC 1071 checksum of the concatenated parts (each but the last of even length)."""
    total = start
    for part in parts:
        total += ones_complement_sum(part)
    return ~fold(total) & 0xFFFF


@dataclass(frozen=True, slots=True)
class VnetHeader:
    """The `virtio_net_hdr` that precedes each packet on an IFF_VNET_HDR TUN."""

    flags: int = 0
    gso_type: int = VNET_GSO_NONE
    header_length: int = 0
    gso_size: int = 0
    checksum_start: int = 0
    checksum_offset: int = 0

    def pack(self) -> bytes:
        return VNET_HEADER.pack(
            self.flags,
            self.gso_type,
            self.header_length,
            self.gso_size,
            self.checksum_start,
            self.checksum_offset,
        )


NO_VNET_HEADER = VnetHeader().pack()


def parse_vnet_header(buffer: Chunk) -> VnetHeader:
    """Parse the 10-byte virtio_net_hdr at the start of `buffer`."""
    if len(buffer) < VNET_HEADER_SIZE:
        raise MalformedPacketError(f"vnet header needs {VNET_HEADER_SIZE} bytes, got {len(buffer)}")
    return VnetHeader(*VNET_HEADER.unpack_from(buffer))


class IpPacket:
    """An IPv4 or IPv6 packet: addresses as packed bytes, the transport part as a view."""

    __slots__ = ("destination", "header", "protocol", "source", "transport", "version")

    def __init__(
        self,
        version: int,
        source: bytes,
        destination: bytes,
        protocol: int,
        header: memoryview,
        transport: memoryview,
    ) -> None:
        self.version = version
        self.source = source
        self.destination = destination
        self.protocol = protocol
        self.header = header
        self.transport = transport


class TcpSegment:
    """A TCP segment; options are decoded only on SYNs, where they mean something to us."""

    __slots__ = (
        "ack",
        "destination_port",
        "flags",
        "mss",
        "payload",
        "seq",
        "source_port",
        "window",
        "window_scale",
    )

    def __init__(
        self,
        source_port: int,
        destination_port: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: memoryview,
        mss: int | None = None,
        window_scale: int | None = None,
    ) -> None:
        self.source_port = source_port
        self.destination_port = destination_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.mss = mss
        self.window_scale = window_scale

    @property
    def sequence_length(self) -> int:
        """Sequence space the segment occupies: payload plus one each for SYN and FIN."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN and 1)

    def __repr__(self) -> str:
        names = "".join(
            c for bit, c in zip((SYN, ACK, FIN, RST, PSH), "SAFRP", strict=True) if self.flags & bit
        )
        return (
            f"TcpSegment({self.source_port}->{self.destination_port} {names} seq={self.seq} "
            f"ack={self.ack} win={self.window} len={len(self.payload)})"
        )


class UdpDatagram:
    """A UDP datagram; the payload is a view into the packet."""

    __slots__ = ("destination_port", "payload", "source_port")

    def __init__(self, source_port: int, destination_port: int, payload: memoryview) -> None:
        self.source_port = source_port
        self.destination_port = destination_port
        self.payload = payload


class IcmpMessage:
    """An ICMP or ICMPv6 message; for echo, `rest` holds identifier and sequence number."""

    __slots__ = ("code", "rest", "type")

    def __init__(self, type_: int, code: int, rest: memoryview) -> None:
        self.type = type_
        self.code = code
        self.rest = rest


def parse_ip(buffer: memoryview) -> IpPacket:
    """Parse an IPv4 or IPv6 packet (no vnet header) from `buffer`."""
    if not buffer:
        raise MalformedPacketError("empty packet")
    version = buffer[0] >> 4
    if version == 4:
        return _parse_ipv4(buffer)
    if version == 6:
        return _parse_ipv6(buffer)
    raise MalformedPacketError(f"IP version {version}")


def _parse_ipv4(buffer: memoryview) -> IpPacket:
    if len(buffer) < IPV4_HEADER_SIZE:
        raise MalformedPacketError(f"IPv4 packet of {len(buffer)} bytes")
    version_ihl, _, total_length, _, fragment, _, protocol, _, source, destination = (
        IPV4_HEADER.unpack_from(buffer)
    )
    header_length = (version_ihl & 0x0F) * 4
    if header_length < IPV4_HEADER_SIZE or total_length < header_length:
        raise MalformedPacketError(f"IPv4 header length {header_length}, total {total_length}")
    if total_length > len(buffer):
        raise MalformedPacketError(f"IPv4 total length {total_length} beyond {len(buffer)} bytes")
    if fragment & (_IPV4_MORE_FRAGMENTS | _IPV4_OFFSET_MASK):
        raise UnsupportedPacketError("IPv4 fragment")
    return IpPacket(
        4,
        source,
        destination,
        protocol,
        buffer[:header_length],
        buffer[header_length:total_length],
    )


def _parse_ipv6(buffer: memoryview) -> IpPacket:
    if len(buffer) < IPV6_HEADER_SIZE:
        raise MalformedPacketError(f"IPv6 packet of {len(buffer)} bytes")
    _, payload_length, next_header, _, source, destination = IPV6_HEADER.unpack_from(buffer)
    end = IPV6_HEADER_SIZE + payload_length
    if end > len(buffer):
        raise MalformedPacketError(f"IPv6 payload length {payload_length} beyond the packet")
    offset = IPV6_HEADER_SIZE
    for _ in range(_IPV6_MAX_EXTENSIONS):
        if next_header not in _IPV6_SKIPPABLE:
            break
        if offset + 8 > end:
            raise MalformedPacketError("IPv6 extension header beyond the packet")
        following, length_units = buffer[offset], buffer[offset + 1]
        offset += (length_units + 1) * 8
        next_header = following
    else:
        raise UnsupportedPacketError("too many IPv6 extension headers")
    if offset > end:
        raise MalformedPacketError("IPv6 extension header beyond the packet")
    if next_header == 44:
        raise UnsupportedPacketError("IPv6 fragment")
    return IpPacket(6, source, destination, next_header, buffer[:offset], buffer[offset:end])


def parse_tcp(transport: memoryview) -> TcpSegment:
    """Parse a TCP segment; MSS and window scale are decoded from SYN segments only."""
    if len(transport) < TCP_HEADER_SIZE:
        raise MalformedPacketError(f"TCP segment of {len(transport)} bytes")
    source_port, destination_port, seq, ack, offset_byte, flags, window, _, _ = (
        TCP_HEADER.unpack_from(transport)
    )
    header_length = (offset_byte >> 4) * 4
    if header_length < TCP_HEADER_SIZE or header_length > len(transport):
        raise MalformedPacketError(f"TCP data offset {header_length} in {len(transport)} bytes")
    segment = TcpSegment(
        source_port, destination_port, seq, ack, flags, window, transport[header_length:]
    )
    if flags & SYN and header_length > TCP_HEADER_SIZE:
        _parse_syn_options(transport[TCP_HEADER_SIZE:header_length], segment)
    return segment


_IPV4_TCP_HEADERS = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH")


def parse_ipv4_tcp(buffer: memoryview) -> tuple[bytes, bytes, TcpSegment] | None:
    """Fast path for the common packet: IPv4 without options carrying TCP.

    One unpack for both headers; returns (source, destination, segment), or None when the
    packet is anything else, fragments included (the caller then takes the general path).
    """
    if len(buffer) < 40 or buffer[0] != 0x45 or buffer[9] != PROTO_TCP:
        return None
    (
        _,
        _,
        total_length,
        _,
        fragment,
        _,
        _,
        _,
        source,
        destination,
        source_port,
        destination_port,
        seq,
        ack,
        offset_byte,
        flags,
        window,
        _,
        _,
    ) = _IPV4_TCP_HEADERS.unpack_from(buffer)
    if total_length > len(buffer) or total_length < 40:
        raise MalformedPacketError(f"IPv4 total length {total_length} in {len(buffer)} bytes")
    if fragment & (_IPV4_MORE_FRAGMENTS | _IPV4_OFFSET_MASK):
        return None  # a fragment: the general path reassembles it
    header_length = (offset_byte >> 4) * 4
    if header_length < TCP_HEADER_SIZE or header_length > total_length - IPV4_HEADER_SIZE:
        raise MalformedPacketError(f"TCP data offset {header_length}")
    segment = TcpSegment(
        source_port,
        destination_port,
        seq,
        ack,
        flags,
        window,
        buffer[IPV4_HEADER_SIZE + header_length : total_length],
    )
    if flags & SYN and header_length > TCP_HEADER_SIZE:
        _parse_syn_options(
            buffer[IPV4_HEADER_SIZE + TCP_HEADER_SIZE : IPV4_HEADER_SIZE + header_length], segment
        )
    return source, destination, segment


def _parse_syn_options(options: memoryview, segment: TcpSegment) -> None:
    index = 0
    end = len(options)
    while index < end:
        kind = options[index]
        if kind == _OPT_END:
            return
        if kind == _OPT_NOP:
            index += 1
            continue
        if index + 1 >= end:
            raise MalformedPacketError("TCP option without length")
        length = options[index + 1]
        if length < 2 or index + length > end:
            raise MalformedPacketError(f"TCP option {kind} with length {length}")
        if kind == _OPT_MSS and length == 4:
            segment.mss = _U16.unpack_from(options, index + 2)[0]
        elif kind == _OPT_WINDOW_SCALE and length == 3:
            segment.window_scale = options[index + 2]
        index += length


def parse_udp(transport: memoryview) -> UdpDatagram:
    """Parse a UDP datagram; the payload ends where the UDP length says."""
    if len(transport) < UDP_HEADER_SIZE:
        raise MalformedPacketError(f"UDP datagram of {len(transport)} bytes")
    source_port, destination_port, length, _ = UDP_HEADER.unpack_from(transport)
    if length < UDP_HEADER_SIZE or length > len(transport):
        raise MalformedPacketError(f"UDP length {length} in {len(transport)} bytes")
    return UdpDatagram(source_port, destination_port, transport[UDP_HEADER_SIZE:length])


def parse_icmp(transport: memoryview) -> IcmpMessage:
    """Parse the type and code of an ICMP or ICMPv6 message."""
    if len(transport) < 8:
        raise MalformedPacketError(f"ICMP message of {len(transport)} bytes")
    return IcmpMessage(transport[0], transport[1], transport[4:])


def tcp_syn_options(mss: int, window_scale: int | None) -> bytes:
    """The options of a SYN or SYN-ACK: MSS, and window scale when negotiated."""
    options = b"\x02\x04" + _U16.pack(mss)
    if window_scale is not None:
        options += bytes((_OPT_NOP, _OPT_WINDOW_SCALE, 3, window_scale))
    return options


@dataclass(frozen=True, slots=True)
class OutputMode:
    """How built packets are framed for the TUN device.

    `vnet_header`: prefix each packet with a virtio_net_hdr (the TUN has IFF_VNET_HDR).
    `checksum_offload`: leave TCP/UDP checksums to the kernel (needs `vnet_header`).
    `gso`: allow TCP super-segments longer than the MSS (needs `checksum_offload`).
    """

    vnet_header: bool = False
    checksum_offload: bool = False
    gso: bool = False

    def __post_init__(self) -> None:
        if self.checksum_offload and not self.vnet_header:
            raise ValueError("checksum offload needs the vnet header")
        if self.gso and not self.checksum_offload:
            raise ValueError("GSO needs checksum offload")


class PacketWriter:
    """Builds packets from one address to another, with the constant sums precomputed."""

    __slots__ = (
        "_ip_constant",
        "_mode",
        "_pseudo_constant",
        "destination",
        "header_size",
        "source",
        "version",
    )

    def __init__(self, source: bytes, destination: bytes, mode: OutputMode) -> None:
        if len(source) != len(destination) or len(source) not in (4, 16):
            raise ValueError("source and destination must both be IPv4 or both IPv6")
        self.source = source
        self.destination = destination
        self.version = 4 if len(source) == 4 else 6
        self.header_size = IPV4_HEADER_SIZE if self.version == 4 else IPV6_HEADER_SIZE
        self._mode = mode
        addresses = ones_complement_sum(source) + ones_complement_sum(destination)
        # The pseudo-header's protocol word is added per packet (TCP and UDP share a writer).
        self._pseudo_constant = addresses
        # Version/IHL, TTL, DF and the addresses never change for this pair.
        self._ip_constant = 0x4500 + _IPV4_DONT_FRAGMENT + addresses

    def _ip_header(self, protocol: int, transport_length: int) -> bytes:
        if self.version == 4:
            total = IPV4_HEADER_SIZE + transport_length
            checksum = ~fold(self._ip_constant + total + ((_DEFAULT_TTL << 8) | protocol)) & 0xFFFF
            return IPV4_HEADER.pack(
                0x45,
                0,
                total,
                0,
                _IPV4_DONT_FRAGMENT,
                _DEFAULT_TTL,
                protocol,
                checksum,
                self.source,
                self.destination,
            )
        return IPV6_HEADER.pack(
            0x60000000, transport_length, protocol, _DEFAULT_TTL, self.source, self.destination
        )

    def _pseudo_sum(self, protocol: int, transport_length: int) -> int:
        return self._pseudo_constant + protocol + transport_length

    def tcp(
        self,
        source_port: int,
        destination_port: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: Sequence[Chunk] = (),
        options: bytes = b"",
        mss: int = 0,
    ) -> list[Chunk]:
        """A TCP segment; a payload longer than `mss` is sent as a GSO super-segment."""
        payload_length = sum(len(part) for part in payload)
        if len(options) & 3:
            options += bytes(4 - (len(options) & 3))  # end-of-options padding
        tcp_header_length = TCP_HEADER_SIZE + len(options)
        transport_length = tcp_header_length + payload_length
        ip_header = self._ip_header(PROTO_TCP, transport_length)
        offset_byte = (tcp_header_length // 4) << 4
        mode = self._mode
        if mode.checksum_offload:
            checksum = fold(self._pseudo_sum(PROTO_TCP, transport_length))
        else:
            header = TCP_HEADER.pack(
                source_port, destination_port, seq, ack, offset_byte, flags, window, 0, 0
            )
            total = self._pseudo_sum(PROTO_TCP, transport_length) + ones_complement_sum(header)
            total += ones_complement_sum(options)
            data = payload[0] if len(payload) == 1 else b"".join(payload)
            checksum = ~fold(total + ones_complement_sum(data)) & 0xFFFF
        tcp_header = TCP_HEADER.pack(
            source_port, destination_port, seq, ack, offset_byte, flags, window, checksum, 0
        )
        if not mode.vnet_header:
            return [ip_header + tcp_header + options, *payload]
        if mode.checksum_offload:
            gso_type = VNET_GSO_NONE
            gso_size = 0
            if mode.gso and mss and payload_length > mss:
                gso_type = VNET_GSO_TCPV4 if self.version == 4 else VNET_GSO_TCPV6
                gso_size = mss
            vnet = VNET_HEADER.pack(
                VNET_F_NEEDS_CSUM,
                gso_type,
                self.header_size + tcp_header_length,
                gso_size,
                self.header_size,
                16,
            )
        else:
            vnet = NO_VNET_HEADER
        return [vnet + ip_header + tcp_header + options, *payload]

    def udp(self, source_port: int, destination_port: int, payload: Chunk) -> list[Chunk]:
        """A UDP datagram."""
        transport_length = UDP_HEADER_SIZE + len(payload)
        ip_header = self._ip_header(PROTO_UDP, transport_length)
        mode = self._mode
        if mode.checksum_offload:
            checksum = fold(self._pseudo_sum(PROTO_UDP, transport_length))
            vnet = VNET_HEADER.pack(VNET_F_NEEDS_CSUM, 0, 0, 0, self.header_size, 6)
        else:
            total = self._pseudo_sum(PROTO_UDP, transport_length) + ones_complement_sum(
                UDP_HEADER.pack(source_port, destination_port, transport_length, 0)
            )
            checksum = ~fold(total + ones_complement_sum(payload)) & 0xFFFF or 0xFFFF
            vnet = NO_VNET_HEADER if mode.vnet_header else b""
        header = UDP_HEADER.pack(source_port, destination_port, transport_length, checksum)
        return [vnet + ip_header + header, payload]

    def icmp(self, type_: int, code: int, body: Chunk) -> list[Chunk]:
        """An ICMP (IPv4) or ICMPv6 message; `body` is everything after the checksum."""
        protocol = PROTO_ICMP if self.version == 4 else PROTO_ICMPV6
        transport_length = 4 + len(body)
        start = (type_ << 8) | code
        if self.version == 6:
            start += self._pseudo_sum(PROTO_ICMPV6, transport_length)
        checksum = internet_checksum(body, start=start)
        vnet = NO_VNET_HEADER if self._mode.vnet_header else b""
        header = bytes((type_, code)) + _U16.pack(checksum)
        return [vnet + self._ip_header(protocol, transport_length) + header, body]


def packet_bytes(packet: Sequence[Chunk]) -> bytes:
    """The packet as one `bytes` (tests and the occasional copy-tolerant caller)."""
    return b"".join(packet)


def address(packed: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The `ipaddress` object for a packed 4- or 16-byte address."""
    if len(packed) == 4:
        return ipaddress.IPv4Address(packed)
    return ipaddress.IPv6Address(packed)
