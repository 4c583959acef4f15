"""IPv4 fragment reassembly and fragmentation (the sans-IO core behind large UDP datagrams).

Scenarios: a datagram larger than the MTU, split by the workstation's kernel, arrives whole
whatever the order and duplication of its fragments; overlapping fragments with different
bytes, the tiny-fragment and header-overwrite attacks of RFC 1858/3128, oversize datagrams
(ping of death), inconsistent or malformed fragments are refused and counted; partial
datagrams time out; floods of fragments keep memory and the number of partial datagrams
within their bounds; and the fragmenter that splits our answers is inverted by the
reassembler, with valid headers on every fragment; the same for IPv6 Fragment headers
(extension headers before it kept, atomic fragments delivered alone).
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepresence.rootd.core.fragments import (
    MAX_IPV4_LENGTH,
    PIECE_OVERHEAD,
    Reassembler,
    ReassemblyLimits,
    fragment_ipv4,
    fragment_ipv6,
    ipv6_fragment_header,
    is_ipv4_fragment,
)
from kubepresence.rootd.core.packets import (
    IPV4_HEADER,
    PROTO_TCP,
    PROTO_UDP,
    OutputMode,
    PacketWriter,
    internet_checksum,
    packet_bytes,
    parse_ip,
    parse_udp,
)

SOURCE = bytes([10, 1, 0, 2])
DESTINATION = bytes([198, 18, 0, 7])


def fragment(
    offset: int,
    payload: bytes,
    *,
    more: bool,
    ident: int = 7,
    protocol: int = PROTO_UDP,
    source: bytes = SOURCE,
) -> memoryview:
    """One IPv4 fragment with a valid header checksum (offset in bytes)."""
    assert offset % 8 == 0
    flags = (0x2000 if more else 0) | (offset // 8)
    header = bytearray(
        IPV4_HEADER.pack(
            0x45, 0, 20 + len(payload), ident, flags, 64, protocol, 0, source, DESTINATION
        )
    )
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    return memoryview(bytes(header) + payload)


def udp_packet(size: int, ident: int = 0) -> bytes:
    """A whole UDP/IPv4 packet with a full checksum and `size` payload bytes."""
    payload = random.Random(size).randbytes(size)
    packet = bytearray(
        packet_bytes(PacketWriter(SOURCE, DESTINATION, OutputMode()).udp(5, 9001, payload))
    )
    packet[4:6] = struct.pack("!H", ident)
    packet[10:12] = b"\0\0"
    packet[10:12] = struct.pack("!H", internet_checksum(bytes(packet[:20])))
    return bytes(packet)


def assert_same_datagram(whole: bytes, original: bytes) -> None:
    assert whole[20:] == original[20:]
    assert whole[:6] == original[:6]
    assert whole[8:10] == original[8:10]  # TTL and protocol
    assert whole[6:8] == b"\0\0"  # no MF, no offset (and DF cleared by the fragmenter)
    assert internet_checksum(whole[:20]) == 0
    udp = parse_udp(parse_ip(memoryview(whole)).transport)
    assert bytes(udp.payload) == original[28:]


# -- reassembly ---------------------------------------------------------------------------


def test_fragments_in_order_give_back_the_datagram() -> None:
    original = udp_packet(4000, ident=0x1234)
    pieces = fragment_ipv4(original, 1500)
    assert len(pieces) == 3
    reassembler = Reassembler()
    results = [reassembler.add(memoryview(p), 0.0) for p in pieces]
    assert results[:2] == [None, None]
    whole = results[2]
    assert whole is not None
    assert_same_datagram(whole, original)
    assert reassembler.stats.reassembled == 1
    assert reassembler.stats.dropped == 0
    assert (reassembler.pending, reassembler.buffered) == (0, 0)


def test_last_fragment_first_and_exact_duplicates() -> None:
    original = udp_packet(3000)
    pieces = fragment_ipv4(original, 1000)
    reassembler = Reassembler()
    order = [pieces[-1], pieces[1], pieces[1], pieces[-1], *pieces[2:-1], pieces[0]]
    results = [reassembler.add(memoryview(p), 1.0) for p in order]
    assert all(r is None for r in results[:-1])
    assert results[-1] is not None
    assert_same_datagram(results[-1], original)
    assert reassembler.stats.duplicates == 2
    assert reassembler.stats.dropped == 0


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=41, max_value=65507),
    data=st.data(),
)
def test_any_permutation_with_duplicates_reassembles(size: int, data: st.DataObject) -> None:
    original = udp_packet(size, ident=size & 0xFFFF)
    mtu = data.draw(st.integers(min_value=68, max_value=min(9000, len(original) - 1)))
    pieces = fragment_ipv4(original, mtu)
    assert len(pieces) > 1
    assert all(len(p) <= mtu for p in pieces)
    if len(pieces) > ReassemblyLimits().max_fragments:
        limits = ReassemblyLimits(max_fragments=len(pieces), max_buffered=1 << 24)
    else:
        limits = ReassemblyLimits()
    order = data.draw(st.permutations(pieces))
    extra = data.draw(st.lists(st.sampled_from(pieces), max_size=5))
    stream = list(order)
    for piece in extra:
        stream.insert(data.draw(st.integers(0, len(stream) - 1)), piece)
    reassembler = Reassembler(limits)
    results = [reassembler.add(memoryview(p), 0.0) for p in stream]
    complete = [r for r in results if r is not None]
    # Complete exactly when the last missing piece came; duplicates after that start a new
    # partial datagram (a retransmission of all of them would complete it again).
    first_complete = next(i for i, r in enumerate(results) if r is not None)
    assert first_complete == max(stream.index(piece) for piece in pieces)
    for whole in complete:
        assert_same_datagram(whole, original)
    assert reassembler.stats.dropped == 0


def test_overlap_with_different_bytes_discards_the_datagram() -> None:
    reassembler = Reassembler()
    assert reassembler.add(fragment(0, b"A" * 16, more=True), 0.0) is None
    assert reassembler.add(fragment(8, b"B" * 16, more=True), 0.0) is None
    assert reassembler.stats.overlapping == 1
    assert reassembler.pending == 0
    assert reassembler.buffered == 0
    # The rest of it, and a clean retransmission, cannot bring it back until the timeout.
    assert reassembler.add(fragment(16, b"C" * 8, more=False), 1.0) is None
    assert reassembler.add(fragment(0, b"A" * 16, more=True), 1.0) is None
    assert reassembler.stats.after_discard == 2
    reassembler.expire(30.0)
    assert reassembler.add(fragment(0, b"A" * 16, more=True), 31.0) is None
    assert reassembler.add(fragment(16, b"C" * 8, more=False), 31.0) == bytes(
        fragment(0, b"A" * 16 + b"C" * 8, more=False)
    )


def test_same_offset_different_bytes_is_an_overlap() -> None:
    reassembler = Reassembler()
    reassembler.add(fragment(8, b"A" * 8, more=True), 0.0)
    reassembler.add(fragment(8, b"Z" * 8, more=True), 0.0)
    assert reassembler.stats.overlapping == 1


def test_overlap_from_the_right_is_refused() -> None:
    reassembler = Reassembler()
    reassembler.add(fragment(24, b"A" * 16, more=True), 0.0)
    reassembler.add(fragment(16, b"B" * 16, more=True), 0.0)
    assert reassembler.stats.overlapping == 1


def test_tiny_first_fragment_is_refused() -> None:
    """RFC 1858: a first fragment that cannot hold the TCP header (flags in a later one)."""
    reassembler = Reassembler()
    assert reassembler.add(fragment(0, b"\0" * 8, more=True, protocol=PROTO_TCP), 0.0) is None
    assert reassembler.stats.tiny_first == 1
    assert reassembler.add(fragment(8, b"\0" * 40, more=False, protocol=PROTO_TCP), 0.0) is None
    assert reassembler.stats.after_discard == 1


def test_tcp_data_offset_counts_for_the_first_fragment() -> None:
    # Data offset 15 words: the header is 60 bytes, the first fragment holds only 56.
    header = bytearray(56)
    header[12] = 0xF0
    reassembler = Reassembler()
    reassembler.add(fragment(0, bytes(header), more=True, protocol=PROTO_TCP), 0.0)
    assert reassembler.stats.tiny_first == 1


def test_offset_inside_the_transport_header_is_refused() -> None:
    """RFC 1858 / 3128: a fragment at offset 8 would rewrite the TCP flags."""
    reassembler = Reassembler()
    reassembler.add(fragment(8, b"\xff" * 16, more=False, protocol=PROTO_TCP), 0.0)
    assert reassembler.stats.header_overwrite == 1
    assert reassembler.add(fragment(0, b"\0" * 24, more=True, protocol=PROTO_TCP), 0.0) is None
    assert reassembler.stats.after_discard == 1


def test_udp_first_fragment_needs_eight_bytes_other_protocols_none() -> None:
    reassembler = Reassembler()
    assert reassembler.add(fragment(0, b"\0" * 8, more=True, ident=1), 0.0) is None
    assert reassembler.stats.tiny_first == 0
    assert reassembler.add(fragment(0, b"\0" * 8, more=True, ident=2, protocol=47), 0.0) is None
    whole = reassembler.add(fragment(8, b"x", more=False, ident=2, protocol=47), 0.0)
    assert whole is not None
    assert whole[20:] == b"\0" * 8 + b"x"


def test_datagram_beyond_65535_bytes_is_refused() -> None:
    """The ping of death: offset 65528 plus 16 bytes."""
    reassembler = Reassembler()
    reassembler.add(fragment(0, b"\0" * 1480, more=True), 0.0)
    reassembler.add(fragment(65528, b"\0" * 16, more=False), 0.0)
    assert reassembler.stats.too_long == 1
    assert reassembler.pending == 0
    assert reassembler.buffered == 0


def test_largest_datagram_is_accepted() -> None:
    original = udp_packet(65507)
    assert len(original) == MAX_IPV4_LENGTH
    reassembler = Reassembler()
    results = [reassembler.add(memoryview(p), 0.0) for p in reversed(fragment_ipv4(original, 1500))]
    assert results[-1] is not None
    assert_same_datagram(results[-1], original)


@pytest.mark.parametrize(
    ("pieces", "reason"),
    [
        ([(16, 16, False), (16, 8, False)], "inconsistent_end"),  # a second, different end
        ([(16, 8, False), (24, 8, True)], "inconsistent_end"),  # a piece beyond the end
        ([(32, 8, True), (16, 8, False)], "inconsistent_end"),  # an end before a piece
        ([(0, 12, True)], "bad_length"),  # a middle fragment not a multiple of 8
        ([(8, 0, False)], "bad_length"),  # an empty fragment
    ],
)
def test_inconsistent_and_malformed_fragments(
    pieces: list[tuple[int, int, bool]], reason: str
) -> None:
    reassembler = Reassembler()
    for offset, length, more in pieces:
        assert reassembler.add(fragment(offset, b"\1" * length, more=more), 0.0) is None
    assert getattr(reassembler.stats, reason) == 1
    assert reassembler.stats.dropped == 1


def test_header_that_does_not_add_up_is_counted() -> None:
    reassembler = Reassembler()
    packet = bytearray(fragment(0, b"\0" * 16, more=True))
    packet[2:4] = struct.pack("!H", 200)  # total length beyond the buffer
    assert reassembler.add(memoryview(bytes(packet)), 0.0) is None
    assert reassembler.add(memoryview(b"\x45" * 10), 0.0) is None
    assert reassembler.stats.bad_length == 2


def test_too_many_fragments_discards_the_datagram() -> None:
    reassembler = Reassembler(ReassemblyLimits(max_fragments=4))
    for index in range(5):
        reassembler.add(fragment(8 * index, b"\0" * 8, more=True), 0.0)
    assert reassembler.stats.too_many_fragments == 1
    assert reassembler.pending == 0


def test_partial_datagrams_time_out() -> None:
    reassembler = Reassembler(ReassemblyLimits(timeout=30.0))
    reassembler.add(fragment(0, b"\0" * 16, more=True, ident=1), 10.0)
    reassembler.add(fragment(0, b"\0" * 16, more=True, ident=2), 20.0)
    assert reassembler.next_deadline() == 40.0
    reassembler.expire(39.9)
    assert reassembler.pending == 2
    reassembler.expire(40.0)
    assert (reassembler.pending, reassembler.stats.timed_out) == (1, 1)
    # The timeout counts from the first fragment: later pieces do not extend it.
    reassembler.add(fragment(16, b"\0" * 8, more=True, ident=2), 45.0)
    reassembler.expire(50.0)
    assert (reassembler.pending, reassembler.stats.timed_out, reassembler.buffered) == (0, 2, 0)
    assert reassembler.next_deadline() is None


def test_too_many_partial_datagrams_evict_the_oldest() -> None:
    reassembler = Reassembler(ReassemblyLimits(max_datagrams=8))
    for ident in range(20):
        reassembler.add(fragment(0, b"\0" * 16, more=True, ident=ident), float(ident))
    assert reassembler.pending == 8
    assert reassembler.stats.evicted == 12
    # The newest survive: datagram 19 completes.
    assert reassembler.add(fragment(16, b"\0" * 8, more=False, ident=19), 20.0) is not None


def test_buffer_bound_evicts_the_oldest_but_never_the_one_being_filled() -> None:
    limits = ReassemblyLimits(max_buffered=MAX_IPV4_LENGTH + 96 * PIECE_OVERHEAD)
    reassembler = Reassembler(limits)
    first = fragment_ipv4(udp_packet(40000), 1500)
    second = fragment_ipv4(udp_packet(40001, ident=1), 1500)
    for piece in first[:-1]:
        reassembler.add(memoryview(piece), 0.0)
    results = [reassembler.add(memoryview(piece), 1.0) for piece in second]
    assert results[-1] is not None  # the second one fit by evicting the first
    assert reassembler.stats.evicted == 1
    assert reassembler.buffered == 0


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        ReassemblyLimits(max_datagrams=0)
    with pytest.raises(ValueError, match="largest"):
        ReassemblyLimits(max_buffered=1000)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # source
            st.integers(0, 40),  # identification
            st.integers(0, 8190),  # offset in units of 8
            st.integers(0, 1480),  # length
            st.booleans(),  # more fragments
            st.integers(0, 2),  # byte value
            st.sampled_from([PROTO_UDP, PROTO_TCP, 1, 47]),
        ),
        max_size=300,
    )
)
def test_memory_bound_holds_under_random_floods(
    flood: list[tuple[int, int, int, int, bool, int, int]],
) -> None:
    limits = ReassemblyLimits(max_datagrams=16, max_buffered=MAX_IPV4_LENGTH + 96 * PIECE_OVERHEAD)
    reassembler = Reassembler(limits)
    now = 0.0
    for source, ident, units, length, more, value, protocol in flood:
        now += 0.25
        reassembler.expire(now)
        whole = reassembler.add(
            fragment(
                units * 8,
                bytes([value]) * length,
                more=more,
                ident=ident,
                protocol=protocol,
                source=bytes([10, 1, 0, source]),
            ),
            now,
        )
        if whole is not None:
            assert len(whole) <= MAX_IPV4_LENGTH
            assert internet_checksum(whole[:20]) == 0
        assert 0 <= reassembler.buffered <= limits.max_buffered
        assert reassembler.pending <= limits.max_datagrams
    reassembler.expire(now + limits.timeout)
    assert (reassembler.pending, reassembler.buffered) == (0, 0)
    assert reassembler.next_deadline() is None


# -- fragmentation ------------------------------------------------------------------------


@pytest.mark.parametrize("mtu", [68, 576, 1280, 1500, 9000])
@pytest.mark.parametrize("size", [1, 1472, 1473, 8192, 26000, 65000, 65507])
def test_fragmenter_headers_and_inverse(size: int, mtu: int) -> None:
    original = udp_packet(size, ident=0xBEEF)
    pieces = fragment_ipv4(original, mtu)
    if len(original) <= mtu:
        assert pieces == [original]
        return
    offsets = []
    for index, piece in enumerate(pieces):
        view = memoryview(piece)
        assert len(piece) <= mtu
        assert is_ipv4_fragment(view)
        assert internet_checksum(piece[:20]) == 0
        (_, _, total, ident, flags, _, protocol, _, source, destination) = IPV4_HEADER.unpack(
            piece[:20]
        )
        assert (total, ident, protocol, source, destination) == (
            len(piece),
            0xBEEF,
            PROTO_UDP,
            SOURCE,
            DESTINATION,
        )
        assert not flags & 0x4000  # DF cleared
        assert bool(flags & 0x2000) == (index < len(pieces) - 1)
        if index < len(pieces) - 1:
            assert (len(piece) - 20) % 8 == 0
        offsets.append(((flags & 0x1FFF) * 8, len(piece) - 20))
    position = 0
    for offset, length in offsets:
        assert offset == position
        position += length
    assert position == len(original) - 20
    reassembler = Reassembler(ReassemblyLimits(max_fragments=len(pieces), max_buffered=1 << 24))
    results = [reassembler.add(memoryview(p), 0.0) for p in pieces]
    assert results[-1] is not None
    assert_same_datagram(results[-1], original)


def test_fragmenter_copies_only_copied_options() -> None:
    # Options: security-like copied option (0x82, 4 bytes) and record route (0x07, not copied).
    options = bytes([0x82, 4, 1, 2, 0x07, 7, 4, 0, 0, 0, 0, 0])
    payload = bytes(range(256)) * 8
    header = bytearray(
        IPV4_HEADER.pack(0x48, 0, 32 + len(payload), 9, 0x4000, 64, 47, 0, SOURCE, DESTINATION)
    )
    packet = bytes(header) + options + payload
    pieces = fragment_ipv4(packet, 600)
    assert pieces[0][0] == 0x48
    assert pieces[0][20:32] == options
    for piece in pieces[1:]:
        assert piece[0] == 0x46
        assert piece[20:24] == bytes([0x82, 4, 1, 2])
        assert internet_checksum(piece[:24]) == 0
    reassembler = Reassembler()
    results = [reassembler.add(memoryview(p), 0.0) for p in pieces]
    assert results[-1] is not None
    assert results[-1][20:32] == options
    assert results[-1][32:] == payload


def test_fragmenter_refuses_what_it_cannot_split() -> None:
    with pytest.raises(ValueError, match="whole"):
        fragment_ipv4(udp_packet(100)[:50], 68)
    with pytest.raises(ValueError, match="room"):
        fragment_ipv4(udp_packet(100), 24)


# -- IPv6 ---------------------------------------------------------------------------------

SOURCE6 = bytes.fromhex("fd000000000000000000000000000002")
DESTINATION6 = bytes.fromhex("20010002000000000000000000000009")


def udp6_packet(size: int) -> bytes:
    payload = random.Random(-size).randbytes(size)
    return packet_bytes(PacketWriter(SOURCE6, DESTINATION6, OutputMode()).udp(5, 9001, payload))


def add6(reassembler: Reassembler, packet: bytes, now: float = 0.0) -> bytes | None:
    view = memoryview(packet)
    at = ipv6_fragment_header(view)
    assert at is not None
    return reassembler.add_ipv6(view, at, now)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(min_value=1300, max_value=65527), data=st.data())
def test_ipv6_fragments_in_any_order_reassemble(size: int, data: st.DataObject) -> None:
    original = udp6_packet(size)
    mtu = data.draw(st.integers(min_value=1280, max_value=min(9000, len(original) - 1)))
    pieces = fragment_ipv6(original, mtu, ident=0xDEADBEEF)
    assert len(pieces) > 1
    assert all(len(p) <= mtu for p in pieces)
    reassembler = Reassembler()
    results = [add6(reassembler, p) for p in data.draw(st.permutations(pieces))]
    assert results[-1] == original
    assert all(r is None for r in results[:-1])
    assert reassembler.stats.dropped == 0


def test_ipv6_fragment_headers() -> None:
    pieces = fragment_ipv6(udp6_packet(4000), 1500, ident=7)
    position = 0
    for index, piece in enumerate(pieces):
        assert piece[6] == 44
        next_header, _, offset_flags, ident = struct.unpack("!BBHI", piece[40:48])
        assert (next_header, ident) == (PROTO_UDP, 7)
        assert offset_flags & 0xFFF8 == position
        assert bool(offset_flags & 1) == (index < len(pieces) - 1)
        assert struct.unpack("!H", piece[4:6])[0] == len(piece) - 40
        position += len(piece) - 48
    assert position == 4008


def test_ipv6_atomic_fragment_is_delivered_alone() -> None:
    """RFC 6946: offset 0 and M clear is a whole packet, whatever else is in flight."""
    original = udp6_packet(100)
    atomic = bytearray(fragment_ipv6(udp6_packet(3000), 1280, ident=1)[0])
    body = original[40:]
    atomic = atomic[:40] + struct.pack("!BBHI", PROTO_UDP, 0, 0, 1) + body
    atomic[4:6] = struct.pack("!H", 8 + len(body))
    reassembler = Reassembler()
    assert add6(reassembler, bytes(atomic)) == original
    assert reassembler.pending == 0


def test_ipv6_extension_headers_before_the_fragment_header_are_kept() -> None:
    original = udp6_packet(3000)
    hop_by_hop = bytes([44, 0, 1, 4, 0, 0, 0, 0])  # next: Fragment; PadN
    pieces = []
    for piece in fragment_ipv6(original, 1280, ident=3):
        fixed = bytearray(piece[:40])
        fixed[6] = 0
        fixed[4:6] = struct.pack("!H", len(piece) - 40 + 8)
        pieces.append(bytes(fixed) + hop_by_hop + piece[40:])
    reassembler = Reassembler()
    results = [add6(reassembler, p) for p in pieces]
    whole = results[-1]
    assert whole is not None
    assert whole[6] == 0  # the fixed header still names hop-by-hop
    assert whole[40] == PROTO_UDP  # which now names UDP, not the Fragment header
    assert whole[48:] == original[40:]
    assert struct.unpack("!H", whole[4:6])[0] == len(whole) - 40
    assert bytes(parse_udp(parse_ip(memoryview(whole)).transport).payload) == original[48:]


def test_ipv6_overlap_and_tiny_first_fragment_are_refused() -> None:
    pieces = fragment_ipv6(udp6_packet(3000), 1280, ident=9)
    reassembler = Reassembler()
    add6(reassembler, pieces[0])
    changed = bytearray(pieces[0])
    changed[-1] ^= 1
    add6(reassembler, bytes(changed))
    assert reassembler.stats.overlapping == 1
    tiny = fragment_ipv6(udp6_packet(3000), 1280, ident=10)[0]
    tiny_first = bytearray(tiny[:48]) + tiny[48:56]  # 8 bytes: not the whole TCP header
    tiny_first[4:6] = struct.pack("!H", 16)
    tiny_first[40] = PROTO_TCP
    reassembler.add_ipv6(memoryview(bytes(tiny_first)), 40, 0.0)
    assert reassembler.stats.tiny_first == 1


def test_ipv6_fragment_header_is_found_only_where_it_is() -> None:
    assert ipv6_fragment_header(memoryview(udp6_packet(10))) is None
    truncated = bytearray(udp6_packet(10)[:44])
    truncated[6] = 0  # hop-by-hop that does not fit
    assert ipv6_fragment_header(memoryview(bytes(truncated))) is None
    bad = bytearray(fragment_ipv6(udp6_packet(3000), 1280, ident=1)[1])
    bad[4:6] = struct.pack("!H", 4)  # payload length cuts the Fragment header
    reassembler = Reassembler()
    assert reassembler.add_ipv6(memoryview(bytes(bad)), 40, 0.0) is None
    assert reassembler.stats.bad_length == 1
