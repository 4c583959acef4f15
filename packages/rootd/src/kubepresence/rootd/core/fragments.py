"""IP fragments: reassembling what the kernel split, splitting what we send. Sans-IO.

Model
-----
A datagram larger than the TUN device's MTU reaches us as fragments (RFC 791): IPv4
packets sharing (source, destination, protocol, identification), each carrying the bytes at
`offset * 8` of the original payload, all but the last with More Fragments set.
`Reassembler.add(packet, now)` takes one fragment and returns the whole packet (first
fragment's header, total length fixed, flags cleared, checksum recomputed) when the last
missing piece arrives, else None.

Each partial datagram keeps its pieces as sorted, non-overlapping intervals. Because
overlaps are never admitted, the datagram is complete exactly when the last fragment (MF
clear) has fixed its length and the pieces' lengths add up to it. What is refused, and
counted in `FragmentStats` by reason:

* overlapping fragments (RFC 5722, applied to IPv4 for safety): an exact duplicate (same
  offset, same bytes) is ignored; any other overlap discards the whole datagram, and a
  tombstone discards its later fragments until the timeout, so a retransmitted piece
  cannot resurrect it;
* the fragment attacks of RFC 1858 / RFC 3128: a first fragment too short to hold the
  transport header (TCP 20 bytes or its data offset, UDP and ICMP 8), and a later fragment
  whose offset lands inside that header (which could rewrite ports or TCP flags after a
  filter looked at them), both discard the datagram;
* a datagram that would exceed 65535 bytes (ping of death), inconsistent last fragments,
  a middle fragment whose length is not a multiple of 8, an empty fragment;
* more than `max_fragments` pieces per datagram, and the global bounds: at most
  `max_datagrams` partial datagrams and `max_buffered` bytes (payload plus a per-piece
  overhead charge, so tiny-fragment floods are bounded too). A new fragment that does not
  fit evicts the oldest partial datagrams; one that could never fit is dropped.
* a partial datagram older than `timeout` seconds is dropped (`expire(now)`); the clock is
  the caller's number, never read here.

IPv6 (RFC 8200 §4.5) goes through the same pieces and checks: `ipv6_fragment_header` finds
the Fragment header behind hop-by-hop/routing/destination options headers, the key is
(source, destination, identification), the reassembled packet keeps the first fragment's
unfragmentable part with its last Next Header naming what the fragments carried, and an
atomic fragment (offset 0, M clear, RFC 6946) is delivered at once, outside any state.
`fragment_ipv6(packet, mtu, ident)` splits our own (extension-header-free) answers.

`fragment_ipv4(packet, mtu)` is the inverse: it splits a whole IPv4 packet into fragments
of at most `mtu` bytes (payload per fragment a multiple of 8, options copied per RFC 791
§3.1, DF cleared, a header checksum per fragment).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator
from dataclasses import dataclass, fields

from kubepresence.rootd.core.packets import (
    IPV4_HEADER,
    IPV4_HEADER_SIZE,
    IPV6_HEADER_SIZE,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    internet_checksum,
)

MAX_IPV4_LENGTH = 65535
_MORE_FRAGMENTS = 0x2000
_OFFSET_MASK = 0x1FFF
_U16 = struct.Struct("!H")
_IPV6_FRAGMENT_HEADER = struct.Struct("!BBHI")
_PROTO_IPV6_FRAGMENT = 44
# Extension headers that may stand before the Fragment header (RFC 8200 §4.1 order).
_IPV6_UNFRAGMENTABLE = frozenset({0, 43, 60})
_IPV6_MAX_EXTENSIONS = 8
# What one buffered piece costs beyond its bytes (list entries, the bytes object's header).
PIECE_OVERHEAD = 64

_Key = tuple[bytes, bytes, int, int]


def is_ipv4_fragment(packet: memoryview) -> bool:
    """Whether an IPv4 packet (at least 20 bytes) has MF set or a non-zero offset."""
    return bool(packet[6] & 0x3F or packet[7])


def ipv6_fragment_header(packet: memoryview) -> int | None:
    """Where the Fragment header of an IPv6 packet (at least 40 bytes) starts, or None.

    Steps over hop-by-hop, routing and destination options headers; anything that does
    not add up is left to the packet parser (None).
    """
    next_header = packet[6]
    at = IPV6_HEADER_SIZE
    end = len(packet)
    for _ in range(_IPV6_MAX_EXTENSIONS):
        if next_header == _PROTO_IPV6_FRAGMENT:
            return at
        if next_header not in _IPV6_UNFRAGMENTABLE or at + 8 > end:
            return None
        next_header, units = packet[at], packet[at + 1]
        at += (units + 1) * 8
    return None


def _ipv6_without_fragment_header(packet: memoryview, fragment_at: int, protocol: int) -> bytes:
    """The unfragmentable part, its last Next Header now naming what the fragment held."""
    fixed = bytearray(packet[:fragment_at])
    if fragment_at == IPV6_HEADER_SIZE:
        fixed[6] = protocol
        return bytes(fixed)
    at = IPV6_HEADER_SIZE
    while True:  # ipv6_fragment_header walked this chain already: it ends at fragment_at
        following = at + (fixed[at + 1] + 1) * 8
        if following >= fragment_at:
            fixed[at] = protocol
            return bytes(fixed)
        at = following


@dataclass(frozen=True, slots=True)
class ReassemblyLimits:
    """Bounds on reassembly; the defaults hold a few 64 KiB datagrams in flight at once."""

    timeout: float = 30.0
    max_datagrams: int = 64
    max_buffered: int = 1 << 21  # 2 MiB
    max_fragments: int = 96  # a 65535-byte datagram at MTU 1280 needs 52

    def __post_init__(self) -> None:
        if self.max_datagrams < 1 or self.max_fragments < 1 or self.timeout <= 0:
            raise ValueError("reassembly limits must be positive")
        if self.max_buffered < MAX_IPV4_LENGTH + self.max_fragments * PIECE_OVERHEAD:
            raise ValueError("max_buffered must hold at least one largest datagram")


@dataclass(slots=True)
class FragmentStats:
    """What reassembly saw; every reason a fragment or datagram was dropped has a counter."""

    fragments: int = 0
    reassembled: int = 0
    duplicates: int = 0
    overlapping: int = 0
    tiny_first: int = 0
    header_overwrite: int = 0
    too_long: int = 0
    inconsistent_end: int = 0
    bad_length: int = 0
    too_many_fragments: int = 0
    over_memory: int = 0
    evicted: int = 0
    timed_out: int = 0
    after_discard: int = 0

    @property
    def dropped(self) -> int:
        """Everything counted as a drop (all but fragments, reassembled and duplicates)."""
        return sum(getattr(self, name) for name in self.drop_reasons())

    @staticmethod
    def drop_reasons() -> Iterator[str]:
        for spec in fields(FragmentStats):
            if spec.name not in ("fragments", "reassembled", "duplicates"):
                yield spec.name

    def summary(self) -> str:
        """The non-zero drop counters, e.g. 'overlapping=2 timed_out=1'."""
        parts = [f"{name}={getattr(self, name)}" for name in self.drop_reasons()]
        return " ".join(part for part in parts if not part.endswith("=0")) or "none"


def _min_transport_header(protocol: int, first_payload: bytes | memoryview | None) -> int:
    """How many leading payload bytes the first fragment must hold (RFC 1858, 3128)."""
    if protocol == PROTO_TCP:
        if first_payload is not None and len(first_payload) >= 13:
            return max(20, (first_payload[12] >> 4) * 4)
        return 20
    if protocol in (PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6):
        return 8
    return 0


class _Partial:
    __slots__ = ("cost", "deadline", "end", "header", "lengths", "pieces", "starts")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.starts: list[int] = []
        self.lengths: list[int] = []
        self.pieces: list[bytes] = []
        self.end: int | None = None  # payload length, known once the last fragment came
        self.header: bytes | None = None  # the first fragment's header
        self.cost = 0

    @property
    def covered(self) -> int:
        return sum(self.lengths)


class Reassembler:
    """Reassembles IPv4 fragments within `ReassemblyLimits`; see the module docstring."""

    def __init__(self, limits: ReassemblyLimits | None = None) -> None:
        self.limits = limits or ReassemblyLimits()
        self.stats = FragmentStats()
        # Insertion order is age order: expiry and eviction pop from the front.
        self._partials: dict[_Key, _Partial] = {}
        self._discarded: dict[_Key, float] = {}
        self._buffered = 0

    @property
    def buffered(self) -> int:
        """Bytes charged for buffered pieces (payload plus `PIECE_OVERHEAD` each)."""
        return self._buffered

    @property
    def pending(self) -> int:
        """Partial datagrams waiting for pieces."""
        return len(self._partials)

    def next_deadline(self) -> float | None:
        """When the oldest partial datagram or tombstone times out."""
        deadlines = []
        if self._partials:
            deadlines.append(next(iter(self._partials.values())).deadline)
        if self._discarded:
            deadlines.append(next(iter(self._discarded.values())))
        return min(deadlines) if deadlines else None

    def expire(self, now: float) -> None:
        """Drop partial datagrams and tombstones whose time is up."""
        partials = self._partials
        while partials:
            key, partial = next(iter(partials.items()))
            if partial.deadline > now:
                break
            self._remove(key)
            self.stats.timed_out += 1
        discarded = self._discarded
        while discarded:
            key, deadline = next(iter(discarded.items()))
            if deadline > now:
                break
            del discarded[key]

    def add(self, packet: memoryview, now: float) -> bytes | None:
        """One IPv4 fragment in; the reassembled packet out when it is complete.

        `packet` must be an IPv4 packet of at least 20 bytes (the caller checked the
        version); a fragment whose header does not add up is counted as `bad_length`.
        """
        stats = self.stats
        stats.fragments += 1
        if len(packet) < IPV4_HEADER_SIZE:
            stats.bad_length += 1
            return None
        version_ihl, _, total_length, ident, flags_offset, _, protocol, _, source, destination = (
            IPV4_HEADER.unpack_from(packet)
        )
        header_length = (version_ihl & 0x0F) * 4
        if (
            header_length < IPV4_HEADER_SIZE
            or total_length < header_length
            or total_length > len(packet)
        ):
            stats.bad_length += 1
            return None
        return self._add(
            (source, destination, protocol, ident),
            (flags_offset & _OFFSET_MASK) * 8,
            bool(flags_offset & _MORE_FRAGMENTS),
            packet[header_length:total_length],
            protocol,
            packet[:header_length],
            MAX_IPV4_LENGTH - IPV4_HEADER_SIZE,
            now,
        )

    def add_ipv6(self, packet: memoryview, fragment_at: int, now: float) -> bytes | None:
        """One IPv6 fragment in (its Fragment header at `fragment_at`, as found by
        `ipv6_fragment_header`); the reassembled packet out when it is complete.

        The reassembled packet has the first fragment's unfragmentable part (fixed header
        and the extension headers before the Fragment header), no Fragment header, and
        the payload length fixed. An atomic fragment (offset 0, M clear; RFC 6946) is
        returned at once, without touching any reassembly state.
        """
        stats = self.stats
        stats.fragments += 1
        (payload_length,) = _U16.unpack_from(packet, 4)
        end = IPV6_HEADER_SIZE + payload_length
        if end > len(packet) or fragment_at + _IPV6_FRAGMENT_HEADER.size > end:
            stats.bad_length += 1
            return None
        protocol, _, offset_flags, ident = _IPV6_FRAGMENT_HEADER.unpack_from(packet, fragment_at)
        offset = offset_flags & 0xFFF8
        more = bool(offset_flags & 1)
        data_at = fragment_at + _IPV6_FRAGMENT_HEADER.size
        unfragmentable = _ipv6_without_fragment_header(packet, fragment_at, protocol)
        if offset == 0 and not more:
            fixed = bytearray(unfragmentable)
            fixed[4:6] = _U16.pack(len(fixed) - IPV6_HEADER_SIZE + end - data_at)
            stats.reassembled += 1
            return bytes(fixed) + bytes(packet[data_at:end])
        key = (bytes(packet[8:24]), bytes(packet[24:40]), _PROTO_IPV6_FRAGMENT, ident)
        return self._add(
            key,
            offset,
            more,
            packet[data_at:end],
            protocol,
            unfragmentable,
            0xFFFF - (len(unfragmentable) - IPV6_HEADER_SIZE),
            now,
        )

    def _add(
        self,
        key: _Key,
        offset: int,
        more: bool,
        payload: memoryview,
        protocol: int,
        header: memoryview | bytes,
        max_payload: int,
        now: float,
    ) -> bytes | None:
        stats = self.stats
        length = len(payload)
        if length == 0 or (more and length % 8):
            stats.bad_length += 1
            return None
        if key in self._discarded:
            stats.after_discard += 1
            return None
        if offset + length > max_payload:
            stats.too_long += 1
            self._discard(key, now)
            return None
        partial = self._partials.get(key)
        minimum = _min_transport_header(protocol, payload if offset == 0 else None)
        if offset == 0 and length < minimum:
            stats.tiny_first += 1
            self._discard(key, now)
            return None
        if 0 < offset < minimum:
            stats.header_overwrite += 1
            self._discard(key, now)
            return None
        if partial is None:
            if length + PIECE_OVERHEAD > self.limits.max_buffered:
                stats.over_memory += 1
                return None
            while len(self._partials) >= self.limits.max_datagrams:
                self._evict_oldest()
            partial = _Partial(now + self.limits.timeout)
            self._partials[key] = partial
        verdict = self._place(partial, offset, payload, more)
        if verdict is not None:
            if verdict:
                setattr(stats, verdict, getattr(stats, verdict) + 1)
                self._discard(key, now)
            else:
                stats.duplicates += 1
            return None
        if offset == 0:
            partial.header = bytes(header)
        if partial.end is None or partial.covered != partial.end:
            self._make_room(key)
            return None
        return self._complete(key, partial)

    def _place(self, partial: _Partial, offset: int, payload: memoryview, more: bool) -> str | None:
        """Insert a piece: None when placed, "" for an exact duplicate, else a drop reason."""
        length = len(payload)
        stop = offset + length
        if more:
            if partial.end is not None and stop > partial.end:
                return "inconsistent_end"
        else:
            if partial.end is not None and partial.end != stop:
                return "inconsistent_end"
            if partial.starts and partial.starts[-1] + partial.lengths[-1] > stop:
                return "inconsistent_end"
        starts = partial.starts
        index = bisect.bisect_right(starts, offset)
        if index > 0:
            previous = index - 1
            if starts[previous] + partial.lengths[previous] > offset:
                if (
                    starts[previous] == offset
                    and partial.lengths[previous] == length
                    and partial.pieces[previous] == payload
                ):
                    return ""
                return "overlapping"
        if index < len(starts) and starts[index] < stop:
            return "overlapping"
        if len(starts) >= self.limits.max_fragments:
            return "too_many_fragments"
        piece = bytes(payload)
        starts.insert(index, offset)
        partial.lengths.insert(index, length)
        partial.pieces.insert(index, piece)
        if not more:
            partial.end = stop
        cost = length + PIECE_OVERHEAD
        partial.cost += cost
        self._buffered += cost
        return None

    def _make_room(self, keep: _Key) -> None:
        """Evict the oldest partial datagrams (never `keep`) until the buffer fits."""
        while self._buffered > self.limits.max_buffered:
            oldest = next(iter(self._partials))
            if oldest == keep:
                if len(self._partials) == 1:
                    # Only this one is left and it alone is over the bound.
                    self._remove(keep)
                    self.stats.over_memory += 1
                    return
                # Move it to the back so the others go first.
                self._partials[keep] = self._partials.pop(keep)
                continue
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        self._remove(next(iter(self._partials)))
        self.stats.evicted += 1

    def _remove(self, key: _Key) -> None:
        partial = self._partials.pop(key)
        self._buffered -= partial.cost

    def _discard(self, key: _Key, now: float) -> None:
        if key in self._partials:
            self._remove(key)
        if len(self._discarded) >= self.limits.max_datagrams:
            del self._discarded[next(iter(self._discarded))]
        self._discarded[key] = now + self.limits.timeout

    def _complete(self, key: _Key, partial: _Partial) -> bytes | None:
        self._remove(key)
        header = partial.header
        assert header is not None  # covered == end implies a piece at offset 0
        fixed = bytearray(header)
        if header[0] >> 4 == 6:
            payload_length = len(header) - IPV6_HEADER_SIZE + partial.covered
            if payload_length > 0xFFFF:
                self.stats.too_long += 1
                return None
            self.stats.reassembled += 1
            fixed[4:6] = _U16.pack(payload_length)
            return bytes(fixed) + b"".join(partial.pieces)
        total = len(header) + partial.covered
        if total > MAX_IPV4_LENGTH:
            self.stats.too_long += 1
            return None
        self.stats.reassembled += 1
        fixed[2:4] = _U16.pack(total)
        fixed[6:8] = b"\0\0"
        fixed[10:12] = b"\0\0"
        fixed[10:12] = _U16.pack(internet_checksum(bytes(fixed)))
        return bytes(fixed) + b"".join(partial.pieces)


def _copied_options(options: bytes) -> bytes:
    """The options with the copied flag (RFC 791 §3.1), padded to 32 bits."""
    kept = bytearray()
    index = 0
    while index < len(options):
        kind = options[index]
        if kind == 0:  # end of options
            break
        if kind == 1:  # no-op
            index += 1
            continue
        if index + 1 >= len(options) or options[index + 1] < 2:
            break  # malformed tail: copy nothing further
        length = options[index + 1]
        if kind & 0x80:
            kept += options[index : index + length]
        index += length
    if len(kept) % 4:
        kept += bytes(4 - len(kept) % 4)
    return bytes(kept)


def fragment_ipv4(packet: bytes | bytearray | memoryview, mtu: int) -> list[bytes]:
    """Split a whole IPv4 packet into fragments of at most `mtu` bytes (itself if it fits).

    The packet's DF flag is cleared in the fragments: we fragment our own answers, which
    the local kernel reassembles. Offsets are relative to the packet's own offset, so a
    fragment can be split again.
    """
    view = memoryview(packet)
    header_length = (view[0] & 0x0F) * 4
    (total_length,) = _U16.unpack_from(view, 2)
    if len(view) < total_length or total_length < header_length:
        raise ValueError("not a whole IPv4 packet")
    if total_length <= mtu:
        return [bytes(view[:total_length])]
    first_header = bytes(view[:header_length])
    later_header = first_header[:IPV4_HEADER_SIZE] + _copied_options(
        first_header[IPV4_HEADER_SIZE:]
    )
    (flags_offset,) = _U16.unpack_from(view, 6)
    base_offset = (flags_offset & _OFFSET_MASK) * 8
    original_more = flags_offset & _MORE_FRAGMENTS
    payload = view[header_length:total_length]
    out: list[bytes] = []
    position = 0
    while position < len(payload):
        header = first_header if position == 0 else later_header
        room = (mtu - len(header)) // 8 * 8
        if room <= 0:
            raise ValueError(f"MTU {mtu} leaves no room for a fragment")
        piece = payload[position : position + room]
        last = position + len(piece) >= len(payload)
        more = original_more if last else _MORE_FRAGMENTS
        fixed = bytearray(header)
        fixed[0] = 0x40 | (len(header) // 4)
        fixed[2:4] = _U16.pack(len(header) + len(piece))
        fixed[6:8] = _U16.pack(more | ((base_offset + position) // 8))
        fixed[10:12] = b"\0\0"
        fixed[10:12] = _U16.pack(internet_checksum(bytes(fixed)))
        out.append(bytes(fixed) + bytes(piece))
        position += len(piece)
    return out


def fragment_ipv6(packet: bytes | bytearray | memoryview, mtu: int, ident: int) -> list[bytes]:
    """Split a whole IPv6 packet with no extension headers into fragments of at most `mtu`
    bytes (itself if it fits), each with a Fragment header carrying `ident`."""
    view = memoryview(packet)
    (payload_length,) = _U16.unpack_from(view, 4)
    end = IPV6_HEADER_SIZE + payload_length
    if len(view) < end:
        raise ValueError("not a whole IPv6 packet")
    if end <= mtu:
        return [bytes(view[:end])]
    room = (mtu - IPV6_HEADER_SIZE - _IPV6_FRAGMENT_HEADER.size) // 8 * 8
    if room <= 0:
        raise ValueError(f"MTU {mtu} leaves no room for a fragment")
    protocol = view[6]
    payload = view[IPV6_HEADER_SIZE:end]
    out: list[bytes] = []
    for position in range(0, len(payload), room):
        piece = payload[position : position + room]
        more = 1 if position + len(piece) < len(payload) else 0
        header = bytearray(view[:IPV6_HEADER_SIZE])
        header[4:6] = _U16.pack(_IPV6_FRAGMENT_HEADER.size + len(piece))
        header[6] = _PROTO_IPV6_FRAGMENT
        fragment = _IPV6_FRAGMENT_HEADER.pack(protocol, 0, position | more, ident & 0xFFFFFFFF)
        out.append(bytes(header) + fragment + bytes(piece))
    return out
