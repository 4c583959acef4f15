"""The network endpoint: UDP flows, ICMP echo, IPv6, vnet framing, limits and garbage."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from kubepresence.rootd.core.endpoint import (
    DatagramFlowExpired,
    DatagramReceived,
    EndpointConfig,
    NetworkEndpoint,
)
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import (
    ACK,
    FIN,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_UNREACHABLE,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
    ICMPV6_UNREACHABLE,
    NO_VNET_HEADER,
    PROTO_UDP,
    RST,
    SYN,
    VNET_F_NEEDS_CSUM,
    VNET_GSO_TCPV4,
    OutputMode,
    packet_bytes,
    parse_vnet_header,
)
from kubepresence.rootd.core.tcp import Connected, DataReceived, TcpConfig
from kubepresence.rootd.core.testing import ScriptedClient, parse_written

ROUTED = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:2::/48")]


def make(accept: bool = True, **config: object) -> tuple[NetworkEndpoint, list[FlowId]]:
    asked: list[FlowId] = []

    def decide(flow: FlowId) -> bool | None:
        asked.append(flow)
        return accept

    endpoint = NetworkEndpoint(
        ROUTED,
        decide,
        EndpointConfig(**config),  # type: ignore[arg-type]
        initial_sequence=lambda: 1000,
    )
    return endpoint, asked


# -- UDP ----------------------------------------------------------------------------------


def test_udp_datagrams_become_a_flow_and_replies_go_back() -> None:
    endpoint, asked = make()
    client = ScriptedClient(source_port=5353, destination="198.18.0.53", destination_port=53)
    endpoint.receive(client.udp(b"query one"), 0.0)
    endpoint.receive(client.udp(b"query two"), 0.1)
    flow = asked[0]
    assert asked == [flow]  # asked once per flow
    assert flow.protocol == PROTO_UDP
    assert str(flow) == "udp 10.1.0.2:5353 -> 198.18.0.53:53"
    assert endpoint.take_events() == [
        DatagramReceived(flow, b"query one"),
        DatagramReceived(flow, b"query two"),
    ]
    endpoint.send_datagram(flow, b"answer")
    (packet,) = endpoint.flush(0.1)
    reply = parse_written(packet)
    assert reply.udp is not None
    assert (reply.ip.source, reply.ip.destination) == (flow.destination.packed, flow.source.packed)
    assert (reply.udp.source_port, reply.udp.destination_port) == (53, 5353)
    assert bytes(reply.udp.payload) == b"answer"


def test_idle_udp_flows_expire_and_activity_keeps_them() -> None:
    endpoint, asked = make(udp_idle_timeout=10.0)
    client = ScriptedClient(destination_port=53)
    endpoint.receive(client.udp(b"a"), 0.0)
    flow = asked[0]
    endpoint.take_events()
    assert endpoint.next_deadline() == 10.0
    endpoint.receive(client.udp(b"b"), 8.0)
    endpoint.on_timer(10.0)
    assert endpoint.udp_flows == [flow]
    endpoint.on_timer(17.9)
    assert endpoint.udp_flows == [flow]
    endpoint.take_events()
    endpoint.on_timer(18.0)
    assert endpoint.udp_flows == []
    assert endpoint.take_events() == [DatagramFlowExpired(flow)]
    assert not endpoint.has_flow(flow)


def test_refused_udp_gets_icmp_port_unreachable_quoting_the_datagram() -> None:
    endpoint, _ = make(accept=False)
    client = ScriptedClient(destination_port=9)
    datagram = client.udp(b"nobody listens")
    endpoint.receive(datagram, 0.0)
    (packet,) = endpoint.flush(0.0)
    icmp = parse_written(packet).icmp
    assert icmp is not None
    assert (icmp.type, icmp.code) == (ICMP_UNREACHABLE, 3)
    assert bytes(icmp.rest[4:]) == datagram[:28]  # IP header + 8 bytes of UDP
    assert endpoint.udp_flows == []
    assert endpoint.stats.refused == 1


def test_refused_udp_over_ipv6_gets_icmpv6_unreachable() -> None:
    endpoint, _ = make(accept=False)
    client = ScriptedClient(source="2001:2::2", destination="2001:2::53", destination_port=9)
    endpoint.receive(client.udp(b"x" * 2000), 0.0)
    (packet,) = endpoint.flush(0.0)
    assert len(packet_bytes(packet)) <= 1280
    icmp = parse_written(packet).icmp
    assert icmp is not None
    assert (icmp.type, icmp.code) == (ICMPV6_UNREACHABLE, 4)


def test_unrouted_udp_is_dropped_silently() -> None:
    endpoint, asked = make()
    endpoint.receive(ScriptedClient(destination="192.0.2.1").udp(b"x"), 0.0)
    assert asked == []
    assert endpoint.flush(0.0) == []
    assert endpoint.stats.not_routed == 1


def test_abort_forgets_a_udp_flow() -> None:
    endpoint, asked = make()
    endpoint.receive(ScriptedClient().udp(b"x"), 0.0)
    endpoint.abort(asked[0])
    assert endpoint.udp_flows == []


def test_udp_accept_none_drops_the_datagram_and_asks_again() -> None:
    asked: list[FlowId] = []
    answers = iter([None, True])

    def decide(flow: FlowId) -> bool | None:
        asked.append(flow)
        return next(answers)

    endpoint = NetworkEndpoint(ROUTED, decide)
    client = ScriptedClient(destination_port=53)
    endpoint.receive(client.udp(b"first"), 0.0)
    assert endpoint.flush(0.0) == []
    assert endpoint.take_events() == []
    endpoint.receive(client.udp(b"second"), 0.1)
    assert endpoint.take_events() == [DatagramReceived(asked[0], b"second")]
    assert len(asked) == 2


# -- deferred TCP admission ---------------------------------------------------------------


def deferring() -> tuple[NetworkEndpoint, list[FlowId]]:
    asked: list[FlowId] = []

    def decide(flow: FlowId) -> bool | None:
        asked.append(flow)
        return None

    endpoint = NetworkEndpoint(
        ROUTED, decide, EndpointConfig(admission_timeout=5.0), initial_sequence=lambda: 1000
    )
    return endpoint, asked


def test_deferred_syn_waits_then_is_accepted() -> None:
    endpoint, asked = deferring()
    client = ScriptedClient()
    endpoint.receive(client.syn(5000), 0.0)
    endpoint.receive(client.syn(5000), 1.0)  # the client's retransmission
    assert endpoint.flush(1.0) == []
    assert len(asked) == 1
    assert endpoint.decide(asked[0], True, 1.5)
    (syn_ack,) = [parse_written(p).tcp for p in endpoint.flush(1.5)]
    assert syn_ack is not None
    assert syn_ack.flags == SYN | ACK
    assert syn_ack.ack == 5001
    endpoint.receive(client.tcp(5001, 1001), 1.6)
    assert endpoint.take_events() == [Connected(asked[0])]


def test_deferred_syn_refused_gets_rst() -> None:
    endpoint, asked = deferring()
    client = ScriptedClient()
    endpoint.receive(client.syn(5000), 0.0)
    assert endpoint.decide(asked[0], False, 0.5)
    (rst,) = [parse_written(p).tcp for p in endpoint.flush(0.5)]
    assert rst is not None
    assert rst.flags == RST | ACK
    assert rst.ack == 5001
    assert not endpoint.decide(asked[0], True, 0.6)  # no longer pending


def test_deferred_syn_times_out_with_rst() -> None:
    endpoint, asked = deferring()
    endpoint.receive(ScriptedClient().syn(5000), 0.0)
    assert endpoint.next_deadline() == 5.0
    endpoint.on_timer(4.9)
    assert endpoint.flush(4.9) == []
    endpoint.on_timer(5.0)
    (rst,) = [parse_written(p).tcp for p in endpoint.flush(5.0)]
    assert rst is not None
    assert rst.flags == RST | ACK
    assert not endpoint.decide(asked[0], True, 6.0)
    assert endpoint.tcp_connections == []


# -- ICMP echo ----------------------------------------------------------------------------


def test_ping_to_a_routed_address_is_answered() -> None:
    endpoint, _ = make()
    client = ScriptedClient()
    body = struct.pack("!HH", 77, 3) + b"ping payload"
    endpoint.receive(client.icmp(ICMP_ECHO_REQUEST, 0, body), 0.0)
    (packet,) = endpoint.flush(0.0)
    reply = parse_written(packet)
    assert reply.icmp is not None
    assert reply.icmp.type == ICMP_ECHO_REPLY
    assert bytes(reply.icmp.rest) == body
    assert reply.ip.source == client.destination.packed


def test_ping6_is_answered() -> None:
    endpoint, _ = make()
    client = ScriptedClient(source="2001:2::2", destination="2001:2::10")
    endpoint.receive(client.icmp(ICMPV6_ECHO_REQUEST, 0, b"\0\1\0\2data"), 0.0)
    (packet,) = endpoint.flush(0.0)
    reply = parse_written(packet)
    assert reply.icmp is not None
    assert reply.icmp.type == ICMPV6_ECHO_REPLY


def test_ping_is_not_answered_when_disabled_or_unrouted() -> None:
    endpoint, _ = make(answer_echo=False)
    endpoint.receive(ScriptedClient().icmp(ICMP_ECHO_REQUEST, 0, b"\0\0\0\0"), 0.0)
    other, _ = make()
    other.receive(
        ScriptedClient(destination="192.0.2.1").icmp(ICMP_ECHO_REQUEST, 0, b"\0\0\0\0"), 0.0
    )
    assert endpoint.flush(0.0) == []
    assert other.flush(0.0) == []


# -- IPv6 TCP, vnet framing, GSO ----------------------------------------------------------


def test_tcp_over_ipv6() -> None:
    endpoint, asked = make()
    client = ScriptedClient(source="2001:2::2", destination="2001:2::10")
    endpoint.receive(client.syn(5000), 0.0)
    (syn_ack,) = [parse_written(p).tcp for p in endpoint.flush(0.0)]
    assert syn_ack is not None
    assert syn_ack.mss == 1500 - 60
    endpoint.receive(client.tcp(5001, 1001, ACK, b"v6 data"), 0.0)
    flow = asked[0]
    assert endpoint.take_events() == [Connected(flow), DataReceived(flow, b"v6 data")]


def test_vnet_framing_in_and_out() -> None:
    endpoint, asked = make(output=OutputMode(True, True, True), mtu=1500)
    client = ScriptedClient()
    endpoint.receive(NO_VNET_HEADER + client.syn(5000), 0.0)
    (syn_ack,) = endpoint.flush(0.0)
    assert parse_vnet_header(packet_bytes(syn_ack)).flags == VNET_F_NEEDS_CSUM
    endpoint.receive(NO_VNET_HEADER + client.tcp(5001, 1001), 0.0)
    flow = asked[0]
    endpoint.send(flow, bytes(100_000))
    packets = endpoint.flush(0.0)
    sizes = [len(packet_bytes(p)) - 10 - 40 for p in packets]
    assert sizes[0] > 60_000  # one super-segment, not forty
    vnet = parse_vnet_header(packet_bytes(packets[0]))
    assert (vnet.gso_type, vnet.gso_size, vnet.header_length) == (VNET_GSO_TCPV4, 1460, 40)
    assert sum(sizes) == 100_000


def test_short_vnet_packet_is_malformed() -> None:
    endpoint, _ = make(output=OutputMode(vnet_header=True))
    endpoint.receive(b"\0" * 5, 0.0)
    assert endpoint.stats.malformed == 1


# -- limits -------------------------------------------------------------------------------


def test_connection_limit_answers_rst() -> None:
    endpoint, _ = make(max_tcp_connections=2)
    for port in (1, 2, 3):
        endpoint.receive(ScriptedClient(source_port=port).syn(5000), 0.0)
    flags = [parse_written(p).tcp.flags for p in endpoint.flush(0.0)]  # type: ignore[union-attr]
    assert sorted(flags) == sorted([SYN | ACK, SYN | ACK, RST | ACK])
    assert endpoint.stats.dropped_over_limit == 1


def test_flush_budget_is_respected_and_the_rest_follows() -> None:
    endpoint, asked = make(tcp=TcpConfig(send_buffer=1 << 20))
    client = ScriptedClient()
    endpoint.receive(client.syn(5000, window_scale=10), 0.0)
    endpoint.flush(0.0)
    endpoint.receive(client.tcp(5001, 1001), 0.0)
    endpoint.send(asked[0], bytes(200 * 1460))
    first = endpoint.flush(0.0, budget=64)
    assert len(first) == 64
    assert endpoint.has_output
    rest = []
    for _ in range(10):
        rest += endpoint.flush(0.0, budget=64)
    assert len(first) + len(rest) == 200
    assert not endpoint.has_output


# -- garbage ------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=120), st.booleans())
def test_arbitrary_packets_never_raise(data: bytes, vnet: bool) -> None:
    endpoint, _ = make(output=OutputMode(vnet_header=vnet))
    for prefix in (b"", b"\x45\x00", b"\x60"):
        endpoint.receive(prefix + data, 0.0)
    endpoint.flush(0.0)
    endpoint.on_timer(100.0)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.sampled_from([0, ACK, SYN, FIN | ACK, RST, RST | ACK, SYN | ACK, 0xFF]),
            st.binary(max_size=40),
            st.integers(0, 65535),
        ),
        max_size=12,
    )
)
def test_arbitrary_segments_to_a_live_connection_never_raise(
    segments: list[tuple[int, int, int, bytes, int]],
) -> None:
    endpoint, asked = make()
    client = ScriptedClient()
    endpoint.receive(client.syn(5000), 0.0)
    endpoint.flush(0.0)
    endpoint.receive(client.tcp(5001, 1001), 0.0)
    now = 0.0
    for seq, ack, flags, payload, window in segments:
        now += 0.3
        endpoint.receive(client.tcp(seq, ack, flags, payload, window), now)
        for event in endpoint.take_events():
            if isinstance(event, DataReceived):
                endpoint.consumed(event.flow, len(event.data))
        endpoint.flush(now)
        endpoint.on_timer(now)
        if endpoint.has_flow(asked[0]) and endpoint.connection(asked[0]).send_space:
            endpoint.send(asked[0], b"reply")
    for connection in endpoint.tcp_connections:
        assert connection.snd_una <= connection.snd_nxt <= connection.snd_max
        assert connection.unconsumed == 0


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            # seq offset from the next expected byte: mostly in order, as real traffic is
            st.sampled_from([0, 0, 0, 1, -1, 1460]) | st.integers(-3000, 3000),
            # ack offset from our first data byte (we send 5120 bytes)
            st.sampled_from([0, 1, 50, 1460, 5120, 5121]) | st.integers(-2, 6000),
            st.sampled_from([ACK, ACK, ACK | FIN, RST | ACK, SYN, 0]),
            st.integers(0, 1500),
            st.integers(0, 65535),
        ),
        max_size=15,
    )
)
def test_header_prediction_changes_nothing_but_speed(
    script: list[tuple[int, int, int, int, int]],
) -> None:
    """The same segments to a connection with and without the fast path give the same
    packets, events and state."""
    outcomes = []
    for predicted in (True, False):
        endpoint, asked = make()
        client = ScriptedClient()
        endpoint.receive(client.syn(5000), 0.0)
        endpoint.flush(0.0)
        endpoint.receive(client.tcp(5001, 1001), 0.0)
        flow = asked[0]
        connection = endpoint.connection(flow)
        if not predicted:
            connection._receive_predicted = lambda segment, now: False  # type: ignore[method-assign]
        endpoint.send(flow, bytes(range(256)) * 20)
        log: list[object] = [endpoint.flush(0.0)]
        expected = 5001
        now = 0.0
        for seq_offset, ack_offset, flags, length, window in script:
            now += 0.05
            payload = bytes([length & 0xFF]) * length
            endpoint.receive(
                client.tcp(expected + seq_offset, 1001 + ack_offset, flags, payload, window), now
            )
            if seq_offset == 0 and flags & ACK and not flags & (RST | SYN):
                expected += length
            events = endpoint.take_events()
            for event in events:
                if isinstance(event, DataReceived):
                    endpoint.consumed(event.flow, len(event.data))
            endpoint.on_timer(now)
            log += [events, [packet_bytes(p) for p in endpoint.flush(now)]]
        log.append((connection.state, connection.snd_una, connection.snd_nxt, connection.rcv_nxt))
        outcomes.append(log)
    assert outcomes[0] == outcomes[1]


def test_busy_connections_take_turns_at_the_write_budget() -> None:
    endpoint, asked = make()
    clients = [ScriptedClient(source_port=port) for port in (1001, 1002)]
    for client in clients:
        endpoint.receive(client.syn(5000, window_scale=10), 0.0)
    endpoint.flush(0.0)
    for client in clients:
        endpoint.receive(client.tcp(5001, 1001), 0.0)
    for flow in asked:
        endpoint.send(flow, bytes(300 * 1460))
    by_port: dict[int, int] = {1001: 0, 1002: 0}
    for _ in range(4):
        for packet in endpoint.flush(0.0, budget=64):
            segment = parse_written(packet).tcp
            assert segment is not None
            by_port[segment.destination_port] += 1
    assert by_port == {1001: 128, 1002: 128}
