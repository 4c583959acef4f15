"""The userspace network endpoint behind the TUN device: packets in, flows out, sans-IO.

Model
-----
Every packet the kernel routes into the TUN device is for a cluster address. The endpoint
plays all of those addresses at once:

* TCP: a SYN to a routed destination asks the owner's `accept(flow)`; True creates a
  `TcpConnection` that answers with SYN-ACK, False answers with RST, None defers: the SYN
  waits (the client's retransmissions are ignored) until `decide(flow, accepted, now)`, or
  is refused after `admission_timeout`, so a relay can dial the cluster first and give the
  client "connection refused" when the dial fails. Later segments go to the connection of
  their 5-tuple; a segment for no connection gets a RST (RFC 9293 §3.10.7.1).
* UDP: the first datagram of a 5-tuple asks `accept(flow)`; True creates a datagram flow
  that lives until it has been idle for `udp_idle_timeout`, False answers ICMP port
  unreachable, None drops this datagram (the next one asks again).
* ICMP echo to a routed address is answered here (the cluster side has no ping relay).
* Packets to unrouted destinations are dropped and counted.
* IPv4 and IPv6 fragments are reassembled first (`core/fragments.py`), whatever they
  carry; the whole packet then takes the path above. A UDP answer larger than the MTU goes
  back as fragments (IPv4, or IPv6 Fragment headers) with a full checksum, which the
  kernel reassembles. Fragment drops are counted in `stats.fragments` and logged at most
  once per `drop_log_interval`.

The owner's loop is: `receive(packet, now)` for each packet read from the TUN, then
`flush(now, budget)` for the packets to write (ACKs coalesced per batch), `take_events()`
for what the relay must act on, and `on_timer(now)` when `next_deadline()` comes. The
application side of a flow is `send`/`consumed`/`close`/`abort` (TCP) and `send_datagram`
(UDP), all keyed by `FlowId`.

A malformed packet is the peer's fault: it is counted in `stats` and dropped; `receive`
never raises for anything the wire brings.
"""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from kubepresence.rootd.core.errors import LocalProtocolError, RemoteProtocolError
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.fragments import (
    FragmentStats,
    Reassembler,
    ReassemblyLimits,
    fragment_ipv4,
    fragment_ipv6,
    ipv6_fragment_header,
    is_ipv4_fragment,
)
from kubepresence.rootd.core.packets import (
    ACK,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_PORT_UNREACHABLE,
    ICMP_UNREACHABLE,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    ICMPV6_PORT_UNREACHABLE,
    ICMPV6_UNREACHABLE,
    IPV4_HEADER_SIZE,
    IPV6_HEADER_SIZE,
    IPV6_MIN_MTU,
    NO_VNET_HEADER,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    RST,
    SYN,
    TCP_HEADER_SIZE,
    UDP_HEADER_SIZE,
    VNET_HEADER_SIZE,
    Chunk,
    IpPacket,
    MalformedPacketError,
    OutputMode,
    PacketWriter,
    TcpSegment,
    UnsupportedPacketError,
    address,
    parse_icmp,
    parse_ip,
    parse_ipv4_tcp,
    parse_tcp,
    parse_udp,
)
from kubepresence.rootd.core.tcp import (
    State,
    TcpConfig,
    TcpConnection,
    TcpEvent,
    segment_builder,
)

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_TcpKey = tuple[bytes, int, bytes, int]
_ROUTED_CACHE_LIMIT = 4096
# Next headers that go straight to the parser (no extension header: no Fragment header).
_IPV6_UNFRAGMENTED = frozenset({PROTO_TCP, PROTO_UDP, PROTO_ICMPV6})


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    """A UDP datagram from the local client on an accepted flow."""

    flow: FlowId
    data: bytes


@dataclass(frozen=True, slots=True)
class DatagramFlowExpired:
    """A UDP flow saw no datagram either way for the idle timeout and is gone."""

    flow: FlowId


Event = TcpEvent | DatagramReceived | DatagramFlowExpired


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """How the endpoint frames packets and how long flows live.

    `mtu` is the TUN device's MTU: the MSS we announce is what fits in it. `tcp` is the
    per-connection template (its `mss` and `gso` are derived from `mtu` and `output`).
    """

    mtu: int = 1500
    output: OutputMode = field(default_factory=OutputMode)
    tcp: TcpConfig = field(default_factory=TcpConfig)
    udp_idle_timeout: float = 60.0
    answer_echo: bool = True
    admission_timeout: float = 10.0
    max_tcp_connections: int = 16384
    max_udp_flows: int = 16384
    reassembly: ReassemblyLimits = field(default_factory=ReassemblyLimits)
    drop_log_interval: float = 10.0

    def tcp_config(self, version: int) -> TcpConfig:
        headers = (IPV4_HEADER_SIZE if version == 4 else IPV6_HEADER_SIZE) + TCP_HEADER_SIZE
        return dataclasses.replace(self.tcp, mss=self.mtu - headers, gso=self.output.gso)


@dataclass(slots=True)
class EndpointStats:
    """Counters of what the endpoint saw and did; exposed for logs and tests."""

    packets: int = 0
    malformed: int = 0
    unsupported: int = 0
    not_routed: int = 0
    refused: int = 0
    resets_sent: int = 0
    echo_replies: int = 0
    tcp_opened: int = 0
    udp_opened: int = 0
    dropped_over_limit: int = 0
    fragments_sent: int = 0
    fragments: FragmentStats = field(default_factory=FragmentStats)


class _UdpFlow:
    __slots__ = ("flow", "last_active", "local_port", "remote_port", "writer")

    def __init__(
        self, flow: FlowId, writer: PacketWriter, local_port: int, remote_port: int, now: float
    ) -> None:
        self.flow = flow
        self.writer = writer
        self.local_port = local_port
        self.remote_port = remote_port
        self.last_active = now


@dataclass(frozen=True, slots=True)
class _PendingSyn:
    """A SYN whose admission the relay has deferred (its `accept` returned None)."""

    flow: FlowId
    key: _TcpKey
    version: int
    source: bytes
    destination: bytes
    syn: TcpSegment


class NetworkEndpoint:
    """Terminates TCP, UDP and ICMP echo for the routed subnets; see the module docstring."""

    def __init__(
        self,
        routed: Iterable[Network],
        accept: Callable[[FlowId], bool | None],
        config: EndpointConfig | None = None,
        initial_sequence: Callable[[], int] | None = None,
    ) -> None:
        self.config = config or EndpointConfig()
        self.stats = EndpointStats()
        self._routed = list(routed)
        self._routed_cache: dict[bytes, bool] = {}
        self._accept = accept
        self._iss = initial_sequence or (lambda: random.getrandbits(32))
        self._mode = self.config.output
        self._vnet = self.config.output.vnet_header
        self._events: list[Event] = []
        self._connections: dict[_TcpKey, TcpConnection] = {}
        self._by_flow: dict[FlowId, tuple[_TcpKey, TcpConnection]] = {}
        self._dirty: dict[_TcpKey, TcpConnection] = {}
        self._scheduled: dict[_TcpKey, float] = {}
        self._timers: list[tuple[float, int, _TcpKey]] = []
        self._timer_order = 0
        self._udp: dict[_TcpKey, _UdpFlow] = {}
        self._udp_by_flow: dict[FlowId, _UdpFlow] = {}
        self._udp_expiry: list[tuple[float, int, _TcpKey]] = []
        self._control: list[list[Chunk]] = []
        self._pending: dict[_TcpKey, _PendingSyn] = {}
        self._pending_by_flow: dict[FlowId, _PendingSyn] = {}
        self._pending_expiry: list[tuple[float, int, _TcpKey]] = []
        self._reassembler = Reassembler(self.config.reassembly)
        self.stats.fragments = self._reassembler.stats
        self._ip_ident = random.getrandbits(16)
        self._ip6_ident = random.getrandbits(32)
        self._drops_logged = 0
        self._next_drop_log = float("-inf")

    # -- packets in ----------------------------------------------------------------------

    def receive(self, packet: Chunk, now: float) -> None:
        """Process one packet read from the TUN (with its vnet header when configured)."""
        self.stats.packets += 1
        view = packet if isinstance(packet, memoryview) else memoryview(packet)
        try:
            if self._vnet:
                if len(view) < VNET_HEADER_SIZE:
                    raise MalformedPacketError("shorter than the vnet header")
                view = view[VNET_HEADER_SIZE:]
            fast = parse_ipv4_tcp(view)
            if fast is not None:
                self._receive_tcp(4, fast[0], fast[1], fast[2], now)
                return
            if len(view) >= IPV4_HEADER_SIZE:
                version = view[0] >> 4
                whole: bytes | None
                if version == 4 and is_ipv4_fragment(view):
                    whole = self._reassembler.add(view, now)
                elif (
                    version == 6
                    and len(view) >= IPV6_HEADER_SIZE
                    and view[6] not in _IPV6_UNFRAGMENTED
                    and (at := ipv6_fragment_header(view)) is not None
                ):
                    whole = self._reassembler.add_ipv6(view, at, now)
                else:
                    whole = b""
                if whole != b"":
                    self._log_fragment_drops(now)
                    if whole is None:
                        return
                    view = memoryview(whole)
            ip = parse_ip(view)
            protocol = ip.protocol
            if protocol == PROTO_TCP:
                self._receive_tcp(
                    ip.version, ip.source, ip.destination, parse_tcp(ip.transport), now
                )
            elif protocol == PROTO_UDP:
                self._receive_udp(ip, now)
            elif protocol in (PROTO_ICMP, PROTO_ICMPV6):
                self._receive_icmp(ip)
            else:
                self.stats.unsupported += 1
        except UnsupportedPacketError as error:
            self.stats.unsupported += 1
            log.debug("unsupported packet: %s", error)
        except RemoteProtocolError as error:
            self.stats.malformed += 1
            log.debug("malformed packet: %s", error)

    def _log_fragment_drops(self, now: float) -> None:
        stats = self._reassembler.stats
        dropped = stats.dropped
        if dropped == self._drops_logged or now < self._next_drop_log:
            return
        log.warning(
            "dropped %d IP fragment(s) or datagram(s) since the last report (totals: %s)",
            dropped - self._drops_logged,
            stats.summary(),
        )
        self._drops_logged = dropped
        self._next_drop_log = now + self.config.drop_log_interval

    def _is_routed(self, destination: bytes) -> bool:
        known = self._routed_cache.get(destination)
        if known is not None:
            return known
        ip = address(destination)
        routed = any(ip in network for network in self._routed)
        if len(self._routed_cache) >= _ROUTED_CACHE_LIMIT:
            self._routed_cache.clear()
        self._routed_cache[destination] = routed
        return routed

    def _receive_tcp(
        self, version: int, source: bytes, destination: bytes, segment: TcpSegment, now: float
    ) -> None:
        key = (source, segment.source_port, destination, segment.destination_port)
        connection = self._connections.get(key)
        flags = segment.flags
        if (
            connection is not None
            and flags & (SYN | ACK) == SYN
            and connection.state in (State.TIME_WAIT, State.CLOSED)
        ):
            # A new connection reusing the 5-tuple: TIME-WAIT yields to it (RFC 6191 spirit).
            self._forget(key, connection)
            connection = None
        if connection is None:
            if key in self._pending:
                return  # the relay is still deciding; the client's retransmissions wait
            self._receive_tcp_unknown(version, source, destination, segment, key, now)
            return
        connection.receive(segment, now)
        self._touch(key, connection)

    def _receive_tcp_unknown(
        self,
        version: int,
        source: bytes,
        destination: bytes,
        segment: TcpSegment,
        key: _TcpKey,
        now: float,
    ) -> None:
        flags = segment.flags
        if flags & RST:
            return
        if flags & (SYN | ACK) != SYN:
            self._reset_reply(source, destination, segment)
            return
        if not self._is_routed(destination):
            self.stats.not_routed += 1
            return
        flow = FlowId(
            PROTO_TCP,
            address(source),
            segment.source_port,
            address(destination),
            segment.destination_port,
        )
        if len(self._connections) >= self.config.max_tcp_connections:
            self.stats.dropped_over_limit += 1
            self._reset_reply(source, destination, segment)
            return
        verdict = self._accept(flow)
        if verdict is None:
            pending = _PendingSyn(flow, key, version, source, destination, segment)
            self._pending[key] = pending
            self._pending_by_flow[flow] = pending
            self._timer_order += 1
            heapq.heappush(
                self._pending_expiry,
                (now + self.config.admission_timeout, self._timer_order, key),
            )
            return
        if not verdict:
            self.stats.refused += 1
            self._reset_reply(source, destination, segment)
            return
        self._open(flow, key, version, source, destination, segment, now)

    def _open(
        self,
        flow: FlowId,
        key: _TcpKey,
        version: int,
        source: bytes,
        destination: bytes,
        segment: TcpSegment,
        now: float,
    ) -> None:
        writer = PacketWriter(destination, source, self._mode)
        connection = TcpConnection(
            flow,
            segment_builder(writer.tcp, segment.destination_port, segment.source_port),
            self._events.append,
            self.config.tcp_config(version),
            self._iss(),
        )
        connection.open_passive(segment, now)
        self._connections[key] = connection
        self._by_flow[flow] = (key, connection)
        self.stats.tcp_opened += 1
        self._touch(key, connection)

    def _reset_reply(self, source: bytes, destination: bytes, segment: TcpSegment) -> None:
        """RST for a segment no connection owns (RFC 9293 §3.10.7.1)."""
        writer = PacketWriter(destination, source, self._mode)
        if segment.flags & ACK:
            seq, ack, flags = segment.ack, 0, RST
        else:
            seq, ack, flags = 0, (segment.seq + segment.sequence_length) & 0xFFFFFFFF, RST | ACK
        self._control.append(
            writer.tcp(segment.destination_port, segment.source_port, seq, ack, flags, 0)
        )
        self.stats.resets_sent += 1

    def _receive_udp(self, ip: IpPacket, now: float) -> None:
        datagram = parse_udp(ip.transport)
        key = (ip.source, datagram.source_port, ip.destination, datagram.destination_port)
        flow_state = self._udp.get(key)
        if flow_state is None:
            if not self._is_routed(ip.destination):
                self.stats.not_routed += 1
                return
            flow = FlowId(
                PROTO_UDP,
                address(ip.source),
                datagram.source_port,
                address(ip.destination),
                datagram.destination_port,
            )
            if len(self._udp) >= self.config.max_udp_flows:
                self.stats.dropped_over_limit += 1
                return
            verdict = self._accept(flow)
            if verdict is None:
                return  # "not now": this datagram is dropped, the next one asks again
            if not verdict:
                self.stats.refused += 1
                self._port_unreachable(ip)
                return
            flow_state = _UdpFlow(
                flow,
                PacketWriter(ip.destination, ip.source, self._mode),
                datagram.destination_port,
                datagram.source_port,
                now,
            )
            self._udp[key] = flow_state
            self._udp_by_flow[flow] = flow_state
            self.stats.udp_opened += 1
            self._timer_order += 1
            heapq.heappush(
                self._udp_expiry, (now + self.config.udp_idle_timeout, self._timer_order, key)
            )
        flow_state.last_active = now
        self._events.append(DatagramReceived(flow_state.flow, bytes(datagram.payload)))

    def _port_unreachable(self, ip: IpPacket) -> None:
        writer = PacketWriter(ip.destination, ip.source, self._mode)
        if ip.version == 4:
            quoted = bytes(ip.header) + bytes(ip.transport[:8])
            message = writer.icmp(ICMP_UNREACHABLE, ICMP_PORT_UNREACHABLE, b"\0\0\0\0" + quoted)
        else:
            room = IPV6_MIN_MTU - IPV6_HEADER_SIZE - 8
            quoted = (bytes(ip.header) + bytes(ip.transport))[:room]
            message = writer.icmp(ICMPV6_UNREACHABLE, ICMPV6_PORT_UNREACHABLE, b"\0\0\0\0" + quoted)
        self._control.append(message)

    def _receive_icmp(self, ip: IpPacket) -> None:
        message = parse_icmp(ip.transport)
        if ip.version == 4:
            request, reply = ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY
        else:
            request, reply = ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY
        if message.type != request or message.code != 0:
            self.stats.unsupported += 1
            return
        if not self.config.answer_echo or not self._is_routed(ip.destination):
            self.stats.not_routed += 1
            return
        writer = PacketWriter(ip.destination, ip.source, self._mode)
        self._control.append(writer.icmp(reply, 0, bytes(message.rest)))
        self.stats.echo_replies += 1

    # -- application side ----------------------------------------------------------------

    def connection(self, flow: FlowId) -> TcpConnection:
        """The TCP connection of `flow` (LocalProtocolError if there is none)."""
        try:
            return self._by_flow[flow][1]
        except KeyError:
            raise LocalProtocolError(f"no TCP connection {flow}") from None

    def has_flow(self, flow: FlowId) -> bool:
        """Whether the endpoint still knows `flow` (TCP connection or UDP flow)."""
        return flow in self._by_flow or flow in self._udp_by_flow

    def send(self, flow: FlowId, data: Chunk) -> int:
        """Queue bytes on a TCP flow; returns how many were taken (see `SendSpace`)."""
        key, connection = self._tcp_entry(flow)
        taken = connection.send(data)
        self._touch(key, connection)
        return taken

    def consumed(self, flow: FlowId, count: int) -> None:
        """The relay passed on `count` bytes of the flow's `DataReceived`: reopen the window."""
        key, connection = self._tcp_entry(flow)
        connection.consumed(count)
        self._touch(key, connection)

    def close(self, flow: FlowId) -> None:
        """Half-close a TCP flow (FIN after the queued data)."""
        key, connection = self._tcp_entry(flow)
        connection.close()
        self._touch(key, connection)

    def abort(self, flow: FlowId) -> None:
        """Reset a TCP flow, or forget a UDP flow."""
        if flow in self._udp_by_flow:
            del self._udp_by_flow[flow]
            key = (
                flow.source.packed,
                flow.source_port,
                flow.destination.packed,
                flow.destination_port,
            )
            self._udp.pop(key, None)
            return
        key, connection = self._tcp_entry(flow)
        connection.abort()
        self._touch(key, connection)

    def decide(self, flow: FlowId, accepted: bool, now: float) -> bool:
        """The relay's late answer to an `accept` that returned None: open the connection
        (SYN-ACK) or refuse it (RST). False if the SYN is no longer pending (timed out)."""
        pending = self._pending_by_flow.pop(flow, None)
        if pending is None:
            return False
        del self._pending[pending.key]
        if len(self._connections) >= self.config.max_tcp_connections:
            accepted = False
            self.stats.dropped_over_limit += 1
        if not accepted:
            self.stats.refused += 1
            self._reset_reply(pending.source, pending.destination, pending.syn)
            return True
        self._open(
            flow,
            pending.key,
            pending.version,
            pending.source,
            pending.destination,
            pending.syn,
            now,
        )
        return True

    def send_datagram(self, flow: FlowId, payload: Chunk) -> None:
        """Send a UDP datagram back to the local client of `flow`."""
        flow_state = self._udp_by_flow.get(flow)
        if flow_state is None:
            raise LocalProtocolError(f"no UDP flow {flow}")
        writer = flow_state.writer
        if writer.header_size + UDP_HEADER_SIZE + len(payload) > self.config.mtu:
            self._send_fragmented(flow_state, payload)
            return
        self._control.append(writer.udp(flow_state.local_port, flow_state.remote_port, payload))

    def _send_fragmented(self, flow_state: _UdpFlow, payload: Chunk) -> None:
        """A UDP answer beyond the MTU as fragments (full checksum: no offload)."""
        writer = flow_state.writer
        room = 0xFFFF - (IPV4_HEADER_SIZE if writer.version == 4 else 0)
        if UDP_HEADER_SIZE + len(payload) > room:
            raise LocalProtocolError(f"UDP payload of {len(payload)} bytes does not fit")
        plain = PacketWriter(writer.source, writer.destination, OutputMode())
        packet = bytearray(
            b"".join(plain.udp(flow_state.local_port, flow_state.remote_port, payload))
        )
        if writer.version == 4:
            self._ip_ident = (self._ip_ident + 1) & 0xFFFF
            packet[4:6] = self._ip_ident.to_bytes(2, "big")
            # fragment_ipv4 rewrites flags and the header checksum of every fragment.
            pieces = fragment_ipv4(packet, self.config.mtu)
        else:
            self._ip6_ident = (self._ip6_ident + 1) & 0xFFFFFFFF
            pieces = fragment_ipv6(packet, self.config.mtu, self._ip6_ident)
        self.stats.fragments_sent += len(pieces)
        if self._vnet:
            self._control.extend([NO_VNET_HEADER, piece] for piece in pieces)
        else:
            self._control.extend([piece] for piece in pieces)

    def _tcp_entry(self, flow: FlowId) -> tuple[_TcpKey, TcpConnection]:
        try:
            return self._by_flow[flow]
        except KeyError:
            raise LocalProtocolError(f"no TCP connection {flow}") from None

    def take_events(self) -> list[Event]:
        """The events since the last call, oldest first."""
        # Connections hold `self._events.append`: empty the list in place, keep the object.
        events = self._events[:]
        self._events.clear()
        return events

    # -- packets out ---------------------------------------------------------------------

    def _touch(self, key: _TcpKey, connection: TcpConnection) -> None:
        if connection.finished:
            self._forget(key, connection)
            return
        if connection.wants_to_produce:
            self._dirty[key] = connection
        self._schedule(key, connection)

    def _schedule(self, key: _TcpKey, connection: TcpConnection) -> None:
        deadline = connection.deadline
        if deadline is None:
            self._scheduled.pop(key, None)  # its heap entry goes stale and is skipped
            return
        if self._scheduled.get(key) == deadline:
            return
        self._scheduled[key] = deadline
        self._timer_order += 1
        heapq.heappush(self._timers, (deadline, self._timer_order, key))

    @property
    def has_output(self) -> bool:
        """Whether `flush` would return packets."""
        return bool(self._control or self._dirty)

    def flush(self, now: float, budget: int = 64) -> list[list[Chunk]]:
        """Up to about `budget` packets to write, control replies first, connections in turn."""
        out = self._control
        self._control = []
        for key in list(self._dirty):
            if len(out) >= budget:
                break
            connection = self._dirty.pop(key)
            more = connection.produce(now, out, budget - len(out))
            if more:
                self._dirty[key] = connection  # to the back of the line
            if connection.finished:
                self._forget(key, connection)
            else:
                self._schedule(key, connection)
        return out

    def _forget(self, key: _TcpKey, connection: TcpConnection) -> None:
        self._connections.pop(key, None)
        self._by_flow.pop(connection.flow, None)
        self._dirty.pop(key, None)
        self._scheduled.pop(key, None)

    # -- time ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `on_timer` must run next, or None when no timer is pending."""
        timers = self._timers
        while timers and self._scheduled.get(timers[0][2]) != timers[0][0]:
            heapq.heappop(timers)
        deadlines = [timers[0][0]] if timers else []
        if self._udp_expiry:
            deadlines.append(self._udp_expiry[0][0])
        if self._pending_expiry:
            deadlines.append(self._pending_expiry[0][0])
        reassembly = self._reassembler.next_deadline()
        if reassembly is not None:
            deadlines.append(reassembly)
        return min(deadlines) if deadlines else None

    def on_timer(self, now: float) -> None:
        """Run the TCP timers, UDP idle expiry and fragment timeouts due by `now`."""
        self._reassembler.expire(now)
        self._log_fragment_drops(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, key = heapq.heappop(timers)
            if self._scheduled.get(key) != deadline:
                continue
            del self._scheduled[key]
            connection = self._connections.get(key)
            if connection is None:
                continue
            connection.on_timer(now)
            if connection.finished:
                self._forget(key, connection)
            else:
                self._touch(key, connection)
        pending_expiry = self._pending_expiry
        while pending_expiry and pending_expiry[0][0] <= now:
            _, _, key = heapq.heappop(pending_expiry)
            pending = self._pending.pop(key, None)
            if pending is not None:
                # The relay never answered: refuse rather than leave the client hanging.
                del self._pending_by_flow[pending.flow]
                self.stats.refused += 1
                self._reset_reply(pending.source, pending.destination, pending.syn)
        expiry = self._udp_expiry
        timeout = self.config.udp_idle_timeout
        while expiry and expiry[0][0] <= now:
            _, _, key = heapq.heappop(expiry)
            flow_state = self._udp.get(key)
            if flow_state is None:
                continue
            if flow_state.last_active + timeout > now:
                self._timer_order += 1
                heapq.heappush(expiry, (flow_state.last_active + timeout, self._timer_order, key))
                continue
            del self._udp[key]
            self._udp_by_flow.pop(flow_state.flow, None)
            self._events.append(DatagramFlowExpired(flow_state.flow))

    # -- introspection -------------------------------------------------------------------

    @property
    def tcp_connections(self) -> Sequence[TcpConnection]:
        """The live TCP connections (tests and diagnostics)."""
        return list(self._connections.values())

    @property
    def reassembly_buffered(self) -> int:
        """Bytes held by partial IPv4 datagrams (bounded by `config.reassembly`)."""
        return self._reassembler.buffered

    @property
    def udp_flows(self) -> Sequence[FlowId]:
        """The live UDP flows (tests and diagnostics)."""
        return [flow_state.flow for flow_state in self._udp.values()]
