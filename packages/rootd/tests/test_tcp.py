"""The userspace TCP endpoint, driven segment by segment by a scripted client.

Each test plays the workstation kernel's side of one connection through `NetworkEndpoint`
(the path real packets take) and checks the exact segments and events that come back.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepresence.rootd.core.endpoint import EndpointConfig, Event, NetworkEndpoint
from kubepresence.rootd.core.errors import LocalProtocolError
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import ACK, FIN, PSH, RST, SYN, TcpSegment
from kubepresence.rootd.core.tcp import (
    Closed,
    Connected,
    DataReceived,
    PeerClosed,
    Reset,
    SendSpace,
    State,
    TcpConfig,
    TcpConnection,
)
from kubepresence.rootd.core.testing import ScriptedClient, parse_written

ROUTED = [ipaddress.ip_network("198.18.0.0/15")]
ISS = 1000
CLIENT_ISN = 5000
MASK = 0xFFFFFFFF


class Harness:
    """One endpoint, one scripted client, a clock that only moves when told."""

    def __init__(self, config: EndpointConfig | None = None, accept: bool = True) -> None:
        self.accepted: list[FlowId] = []
        self._accept = accept
        self.endpoint = NetworkEndpoint(ROUTED, self._decide, config, initial_sequence=lambda: ISS)
        self.client = ScriptedClient()
        self.now = 0.0

    def _decide(self, flow: FlowId) -> bool:
        self.accepted.append(flow)
        return self._accept

    def feed(self, *packets: bytes) -> None:
        for packet in packets:
            self.endpoint.receive(packet, self.now)

    def out(self, budget: int = 1000) -> list[TcpSegment]:
        segments = []
        for packet in self.endpoint.flush(self.now, budget):
            tcp = parse_written(packet).tcp
            assert tcp is not None
            segments.append(tcp)
        return segments

    def events(self) -> list[Event]:
        return self.endpoint.take_events()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.endpoint.on_timer(self.now)

    def run_timers_until(self, limit: float) -> None:
        """Advance to each deadline in turn (bounded), as the shell's timer would."""
        for _ in range(100):
            deadline = self.endpoint.next_deadline()
            if deadline is None or deadline > limit:
                return
            self.now = max(self.now, deadline)
            self.endpoint.on_timer(self.now)

    @property
    def connection(self) -> TcpConnection:
        (connection,) = self.endpoint.tcp_connections
        return connection

    def state(self) -> State:
        return self.connection.state

    @property
    def flow(self) -> FlowId:
        return self.connection.flow

    def handshake(self, mss: int | None = 1460, window_scale: int | None = 7) -> TcpSegment:
        self.feed(self.client.syn(CLIENT_ISN, mss, window_scale))
        (syn_ack,) = self.out()
        self.feed(self.client.tcp(CLIENT_ISN + 1, ISS + 1))
        assert self.out() == []
        assert self.events() == [Connected(self.flow)]
        return syn_ack

    def ack(self, ack: int, seq: int = CLIENT_ISN + 1, window: int = 65535) -> bytes:
        return self.client.tcp(seq, ack, ACK, b"", window)


def data(length: int, seed: int = 0) -> bytes:
    return bytes((seed + i * 7) & 0xFF for i in range(length))


# -- handshake and options ----------------------------------------------------------------


def test_passive_open_answers_syn_ack_then_connects() -> None:
    h = Harness()
    h.feed(h.client.syn(CLIENT_ISN))
    (syn_ack,) = h.out()
    assert syn_ack.flags == SYN | ACK
    assert (syn_ack.seq, syn_ack.ack) == (ISS, CLIENT_ISN + 1)
    assert syn_ack.mss == 1460
    assert syn_ack.window_scale is not None
    assert h.state() is State.SYN_RECEIVED
    assert h.events() == []
    h.feed(h.client.tcp(CLIENT_ISN + 1, ISS + 1))
    assert h.state() is State.ESTABLISHED
    assert h.events() == [Connected(h.flow)]
    assert h.accepted == [h.flow]
    assert str(h.flow) == "tcp 10.1.0.2:40000 -> 198.18.0.10:80"


def test_mss_is_clamped_to_the_tun_mtu_and_to_the_peer() -> None:
    h = Harness(EndpointConfig(mtu=1280))
    syn_ack = h.handshake(mss=9000)
    assert syn_ack.mss == 1280 - 40
    assert h.connection.send_mss == 1240
    h2 = Harness()
    h2.handshake(mss=536)
    h2.endpoint.send(h2.flow, data(2000))
    assert [len(s.payload) for s in h2.out()] == [536, 536, 536, 392]


def test_missing_mss_option_means_536() -> None:
    h = Harness()
    h.handshake(mss=None, window_scale=None)
    assert h.connection.send_mss == 536


def test_no_window_scaling_unless_the_peer_offers_it() -> None:
    h = Harness(EndpointConfig(tcp=TcpConfig(receive_buffer=1 << 20)))
    syn_ack = h.handshake(window_scale=None)
    assert syn_ack.window_scale is None
    h.endpoint.send(h.flow, b"x")
    (segment,) = h.out()
    assert segment.window == 65535  # 1 MiB free, but unscaled the field tops out


def test_window_scale_applies_to_both_directions() -> None:
    h = Harness(EndpointConfig(tcp=TcpConfig(receive_buffer=1 << 20)))
    syn_ack = h.handshake(window_scale=3)
    assert syn_ack.window_scale == 5  # 1 MiB >> 5 fits in 16 bits
    # The client's window field 1000 with shift 3 is 8000 bytes.
    h.feed(h.ack(ISS + 1, window=1000))
    h.endpoint.send(h.flow, data(20000))
    assert sum(len(s.payload) for s in h.out()) == 8000
    h.endpoint.send(h.flow, b"")
    (probe_free,) = [h.connection]
    assert probe_free.snd_nxt - probe_free.snd_una == 8000


def test_duplicate_syn_repeats_the_syn_ack() -> None:
    h = Harness()
    h.feed(h.client.syn(CLIENT_ISN))
    first = h.out()
    h.feed(h.client.syn(CLIENT_ISN))
    again = h.out()
    assert [(s.flags, s.seq, s.ack) for s in again] == [(s.flags, s.seq, s.ack) for s in first]


def test_lost_syn_ack_is_retransmitted_then_given_up() -> None:
    h = Harness(EndpointConfig(tcp=TcpConfig(max_syn_retransmissions=2)))
    h.feed(h.client.syn(CLIENT_ISN))
    assert len(h.out()) == 1
    h.advance(1.0)
    assert [s.flags for s in h.out()] == [SYN | ACK]
    h.advance(2.0)  # backoff doubled
    assert [s.flags for s in h.out()] == [SYN | ACK]
    h.advance(3.9)
    assert h.out() == []
    h.advance(0.1)
    assert [s.flags for s in h.out()] == [RST | ACK]
    assert h.events() == [Reset(h.accepted[0], "retransmission timeout")]
    assert h.endpoint.tcp_connections == []


def test_wrong_ack_in_syn_received_gets_a_reset() -> None:
    h = Harness()
    h.feed(h.client.syn(CLIENT_ISN))
    h.out()
    h.feed(h.client.tcp(CLIENT_ISN + 1, ISS + 77))
    (rst,) = h.out()
    assert rst.flags == RST
    assert rst.seq == ISS + 77
    assert h.state() is State.SYN_RECEIVED


def test_refused_syn_gets_rst_and_no_connection() -> None:
    h = Harness(accept=False)
    h.feed(h.client.syn(CLIENT_ISN))
    (rst,) = h.out()
    assert rst.flags == RST | ACK
    assert (rst.seq, rst.ack) == (0, CLIENT_ISN + 1)
    assert h.endpoint.tcp_connections == []
    assert h.endpoint.stats.refused == 1


def test_syn_to_an_unrouted_address_is_dropped() -> None:
    h = Harness()
    other = ScriptedClient(destination="192.0.2.1")
    h.feed(other.syn(CLIENT_ISN))
    assert h.out() == []
    assert h.accepted == []
    assert h.endpoint.stats.not_routed == 1


def test_segment_for_unknown_connection_gets_rst() -> None:
    h = Harness()
    h.feed(h.client.tcp(CLIENT_ISN, 4242, ACK, b"stray"))
    (rst,) = h.out()
    assert rst.flags == RST
    assert rst.seq == 4242
    h.feed(h.client.tcp(CLIENT_ISN, 0, FIN, b""))
    (rst,) = h.out()
    assert rst.flags == RST | ACK
    assert rst.ack == CLIENT_ISN + 1
    h.feed(h.client.tcp(CLIENT_ISN, 0, RST, b""))
    assert h.out() == []  # never answer a RST


# -- data ---------------------------------------------------------------------------------


def test_data_from_client_is_delivered_and_acked_once_per_batch() -> None:
    h = Harness()
    h.handshake()
    seq = CLIENT_ISN + 1
    h.feed(
        h.client.tcp(seq, ISS + 1, ACK, b"one "),
        h.client.tcp(seq + 4, ISS + 1, ACK, b"two "),
        h.client.tcp(seq + 8, ISS + 1, ACK | PSH, b"three"),
    )
    assert [e.data for e in h.events() if isinstance(e, DataReceived)] == [
        b"one ",
        b"two ",
        b"three",
    ]
    (ack,) = h.out()
    assert ack.flags == ACK
    assert ack.ack == seq + 13
    assert ack.seq == ISS + 1


def test_data_to_client_is_segmented_and_acknowledged() -> None:
    h = Harness()
    h.handshake()
    payload = data(5000)
    assert h.endpoint.send(h.flow, payload) == 5000
    segments = h.out()
    assert [s.seq - ISS - 1 for s in segments] == [0, 1460, 2920, 4380]
    assert b"".join(bytes(s.payload) for s in segments) == payload
    assert [bool(s.flags & PSH) for s in segments] == [False, False, False, True]
    h.feed(h.ack(ISS + 1 + 5000))
    assert h.connection.snd_una == ISS + 1 + 5000
    assert h.endpoint.next_deadline() is None  # nothing in flight: no timer


def test_small_sends_are_coalesced_into_one_segment() -> None:
    h = Harness()
    h.handshake()
    for piece in (b"a", b"bc", b"def"):
        h.endpoint.send(h.flow, piece)
    (segment,) = h.out()
    assert bytes(segment.payload) == b"abcdef"


def test_large_sends_are_not_copied() -> None:
    h = Harness()
    h.handshake()
    big = data(1000) * 8
    h.endpoint.send(h.flow, big)
    segments = h.out()
    assert segments[0].payload.tobytes() == big[:1460]


def test_send_buffer_is_bounded_and_signals_space() -> None:
    h = Harness(EndpointConfig(tcp=TcpConfig(send_buffer=4000)))
    h.handshake()
    assert h.endpoint.send(h.flow, data(3000)) == 3000
    assert h.endpoint.send(h.flow, data(5000)) == 1000
    assert h.connection.send_space == 0
    h.out()
    h.feed(h.ack(ISS + 1 + 2920))
    assert SendSpace(h.flow) in h.events()
    assert h.connection.send_space == 2920


def test_receive_window_closes_and_reopens_with_an_update() -> None:
    h = Harness(EndpointConfig(tcp=TcpConfig(receive_buffer=4096)))
    h.handshake(window_scale=None)
    seq = CLIENT_ISN + 1
    h.feed(h.client.tcp(seq, ISS + 1, ACK, data(4096)))
    (ack,) = h.out()
    assert ack.window == 0
    assert ack.ack == seq + 4096
    h.feed(h.client.tcp(seq + 4096, ISS + 1, ACK, b"beyond"))
    assert [e for e in h.events() if isinstance(e, DataReceived) and e.data == b"beyond"] == []
    (ack,) = h.out()
    assert ack.ack == seq + 4096
    assert ack.window == 0
    h.endpoint.consumed(h.flow, 4096)
    (update,) = h.out()
    assert update.window == 4096
    assert update.ack == seq + 4096
    with pytest.raises(LocalProtocolError):
        h.endpoint.consumed(h.flow, 1)


def test_zero_window_is_probed_until_it_opens() -> None:
    h = Harness()
    h.handshake(window_scale=None)
    h.feed(h.ack(ISS + 1, window=0))
    rto = h.connection.rto
    h.endpoint.send(h.flow, b"waiting")
    assert h.out() == []
    h.advance(rto)
    (probe,) = h.out()
    assert probe.seq == ISS
    assert probe.payload.nbytes == 0
    h.advance(rto)
    assert h.out() == []  # backed off to twice the interval
    h.advance(rto)
    assert len(h.out()) == 1
    h.feed(h.ack(ISS + 1, window=100))
    (segment,) = h.out()
    assert bytes(segment.payload) == b"waiting"


# -- loss, order, duplicates --------------------------------------------------------------


def test_lost_data_is_retransmitted_with_backoff() -> None:
    h = Harness()
    h.handshake()
    rto = h.connection.rto
    h.endpoint.send(h.flow, b"lost in the tunnel")
    (first,) = h.out()
    h.advance(rto * 0.99)
    assert h.out() == []
    h.advance(rto * 0.01)
    (again,) = h.out()
    assert (again.seq, bytes(again.payload)) == (first.seq, bytes(first.payload))
    assert h.connection.rto == 2 * rto
    h.advance(2 * rto * 0.99)
    assert h.out() == []
    h.advance(2 * rto * 0.01)
    assert len(h.out()) == 1
    h.feed(h.ack(ISS + 1 + 18))
    assert h.endpoint.next_deadline() is None


def test_retransmission_gives_up_with_reset() -> None:
    h = Harness(EndpointConfig(tcp=TcpConfig(max_retransmissions=3)))
    h.handshake()
    h.endpoint.send(h.flow, b"nobody home")
    h.out()
    flow = h.flow
    h.run_timers_until(1000.0)
    assert [s.flags for s in h.out()] == [RST | ACK]
    assert h.events() == [Reset(flow, "retransmission timeout")]
    assert h.endpoint.tcp_connections == []


def test_rto_adapts_to_measured_rtt() -> None:
    h = Harness()
    h.handshake()
    for _ in range(10):
        h.endpoint.send(h.flow, b"x")
        h.out()
        h.now += 0.01
        h.feed(h.ack(h.connection.snd_max))
    assert h.connection.rto == pytest.approx(0.2)  # the floor: 10 ms RTT is far below it


def test_three_duplicate_acks_trigger_fast_retransmit() -> None:
    h = Harness()
    h.handshake()
    h.endpoint.send(h.flow, data(1460 * 5))
    segments = h.out()
    assert len(segments) == 5
    # The client got segment 0 only: it acknowledges it, then repeats that ACK.
    h.feed(h.ack(ISS + 1 + 1460))
    assert h.out() == []
    h.feed(h.ack(ISS + 1 + 1460), h.ack(ISS + 1 + 1460), h.ack(ISS + 1 + 1460))
    resent = h.out()
    assert [s.seq - ISS - 1 for s in resent] == [1460, 2920, 4380, 5840]


def test_out_of_order_segments_are_held_then_delivered_in_order() -> None:
    h = Harness()
    h.handshake()
    seq = CLIENT_ISN + 1
    h.feed(h.client.tcp(seq + 10, ISS + 1, ACK, b"0123456789"))
    h.feed(h.client.tcp(seq + 20, ISS + 1, ACK, b"abcdefghij"))
    assert h.events() == []
    (dup_ack,) = h.out()
    assert dup_ack.ack == seq
    h.feed(h.client.tcp(seq, ISS + 1, ACK, b"ABCDEFGHIJ"))
    received = b"".join(e.data for e in h.events() if isinstance(e, DataReceived))
    assert received == b"ABCDEFGHIJ0123456789abcdefghij"
    (ack,) = h.out()
    assert ack.ack == seq + 30


def test_overlapping_and_duplicate_segments_deliver_each_byte_once() -> None:
    h = Harness()
    h.handshake()
    seq = CLIENT_ISN + 1
    stream = data(100)
    h.feed(h.client.tcp(seq, ISS + 1, ACK, stream[:40]))
    h.feed(h.client.tcp(seq, ISS + 1, ACK, stream[:40]))  # duplicate
    h.feed(h.client.tcp(seq + 30, ISS + 1, ACK, stream[30:70]))  # overlaps
    h.feed(h.client.tcp(seq + 80, ISS + 1, ACK, stream[80:100]))  # gap
    h.feed(h.client.tcp(seq + 60, ISS + 1, ACK, stream[60:90]))  # fills it, overlapping both
    received = b"".join(e.data for e in h.events() if isinstance(e, DataReceived))
    assert received == stream
    acks = h.out()
    assert acks[-1].ack == seq + 100


def test_out_of_order_memory_is_bounded_by_the_receive_buffer() -> None:
    h = Harness(EndpointConfig(tcp=TcpConfig(receive_buffer=8192)))
    h.handshake(window_scale=None)
    seq = CLIENT_ISN + 1
    # Overlapping copies at every offset past a gap: a hostile peer's memory attack.
    for start in range(1, 7000, 7):
        h.feed(h.client.tcp(seq + start, ISS + 1, ACK, data(1000, start)))
    held = h.connection._out_of_order
    assert sum(len(chunk) for chunk in held.values()) <= 8192
    assert h.events() == []
    # The gap fills: every held byte that fits is delivered once, in order.
    h.feed(h.client.tcp(seq, ISS + 1, ACK, b"G"))
    received = b"".join(e.data for e in h.events() if isinstance(e, DataReceived))
    assert received[:1] == b"G"
    assert len(received) <= 8192
    assert h.connection.rcv_nxt == seq + len(received)


# -- closing ------------------------------------------------------------------------------


def test_peer_closes_first_and_we_keep_sending() -> None:
    h = Harness()
    h.handshake()
    seq = CLIENT_ISN + 1
    h.feed(h.client.tcp(seq, ISS + 1, ACK | FIN, b"request"))
    flow = h.flow
    assert h.events() == [DataReceived(flow, b"request"), PeerClosed(flow)]
    assert h.state() is State.CLOSE_WAIT
    (ack,) = h.out()
    assert ack.ack == seq + 8
    h.endpoint.send(flow, b"response")
    h.endpoint.close(flow)
    (segment,) = h.out()
    assert segment.flags & FIN
    assert bytes(segment.payload) == b"response"
    assert h.state() is State.LAST_ACK
    h.feed(h.client.tcp(seq + 8, ISS + 1 + 9))
    assert h.events() == [Closed(flow)]
    assert h.out() == []
    assert h.endpoint.tcp_connections == []


def test_we_close_first_and_the_peer_keeps_sending() -> None:
    h = Harness()
    h.handshake()
    seq = CLIENT_ISN + 1
    flow = h.flow
    h.endpoint.send(flow, b"bye")
    h.endpoint.close(flow)
    (fin,) = h.out()
    assert fin.flags & FIN
    assert fin.seq == ISS + 1
    fin_seq = ISS + 1 + 3
    h.feed(h.client.tcp(seq, fin_seq + 1))
    assert h.state() is State.FIN_WAIT_2
    h.feed(h.client.tcp(seq, fin_seq + 1, ACK, b"still talking"))
    assert h.events() == [DataReceived(flow, b"still talking")]
    (ack,) = h.out()
    # The trap: after our FIN every ACK carries seq = FIN + 1.
    assert ack.seq == fin_seq + 1
    assert ack.ack == seq + 13
    h.feed(h.client.tcp(seq + 13, fin_seq + 1, ACK | FIN))
    assert h.events() == [PeerClosed(flow), Closed(flow)]
    assert h.state() is State.TIME_WAIT
    (last_ack,) = h.out()
    assert last_ack.seq == fin_seq + 1
    assert last_ack.ack == seq + 14
    # A retransmitted FIN in TIME-WAIT is acknowledged again.
    h.feed(h.client.tcp(seq + 13, fin_seq + 1, ACK | FIN))
    (again,) = h.out()
    assert again.ack == seq + 14
    h.advance(1.0)
    assert h.endpoint.tcp_connections == []
    assert h.events() == []


def test_simultaneous_close_goes_through_closing() -> None:
    h = Harness()
    h.handshake()
    seq = CLIENT_ISN + 1
    flow = h.flow
    h.endpoint.close(flow)
    h.out()
    h.feed(h.client.tcp(seq, ISS + 1, ACK | FIN))  # FIN that does not ack ours yet
    assert h.state() is State.CLOSING
    h.feed(h.client.tcp(seq + 1, ISS + 2))
    assert h.state() is State.TIME_WAIT
    assert h.events() == [PeerClosed(flow), Closed(flow)]


def test_lost_fin_is_retransmitted() -> None:
    h = Harness()
    h.handshake()
    h.endpoint.close(h.flow)
    (fin,) = h.out()
    h.advance(1.0)
    (again,) = h.out()
    assert again.flags & FIN
    assert again.seq == fin.seq


def test_close_during_handshake_sends_fin_after_it() -> None:
    h = Harness()
    h.feed(h.client.syn(CLIENT_ISN))
    h.out()
    flow = h.accepted[0]
    h.endpoint.send(flow, b"early")
    h.endpoint.close(flow)
    with pytest.raises(LocalProtocolError):
        h.endpoint.send(flow, b"late")
    h.feed(h.client.tcp(CLIENT_ISN + 1, ISS + 1))
    (segment,) = h.out()
    assert bytes(segment.payload) == b"early"
    assert segment.flags & FIN
    assert h.state() is State.FIN_WAIT_1


def test_new_syn_reuses_a_tuple_in_time_wait() -> None:
    h = Harness()
    h.handshake()
    seq = CLIENT_ISN + 1
    h.endpoint.close(h.flow)
    h.out()
    h.feed(h.client.tcp(seq, ISS + 2, ACK | FIN))
    assert h.state() is State.TIME_WAIT
    h.events()
    h.feed(h.client.syn(CLIENT_ISN + 100000))
    (syn_ack,) = h.out()
    assert syn_ack.flags == SYN | ACK
    assert syn_ack.ack == CLIENT_ISN + 100001


# -- resets and misuse --------------------------------------------------------------------


def test_rst_in_window_resets_and_out_of_window_is_ignored() -> None:
    h = Harness()
    h.handshake()
    flow = h.flow
    h.feed(h.client.tcp(CLIENT_ISN + 1 + 10_000_000, 0, RST))
    assert h.events() == []
    h.feed(h.client.tcp(CLIENT_ISN + 1, 0, RST))
    assert h.events() == [Reset(flow, "reset by peer")]
    assert h.out() == []
    assert h.endpoint.tcp_connections == []


def test_abort_sends_rst_and_reports_once() -> None:
    h = Harness()
    h.handshake()
    flow = h.flow
    h.endpoint.abort(flow)
    (rst,) = h.out()
    assert rst.flags == RST | ACK
    assert rst.seq == ISS + 1
    assert rst.ack == CLIENT_ISN + 1
    assert h.events() == [Reset(flow, "aborted")]
    with pytest.raises(LocalProtocolError):
        h.endpoint.send(flow, b"x")


def test_syn_on_established_connection_gets_challenge_ack() -> None:
    h = Harness()
    h.handshake()
    h.feed(h.client.syn(CLIENT_ISN + 99))
    (ack,) = h.out()
    assert ack.flags == ACK
    assert ack.ack == CLIENT_ISN + 1
    assert h.state() is State.ESTABLISHED


def test_ack_of_unsent_data_is_answered_not_believed() -> None:
    h = Harness()
    h.handshake()
    h.feed(h.client.tcp(CLIENT_ISN + 1, ISS + 5000, ACK, b"data"))
    (ack,) = h.out()
    assert ack.ack == CLIENT_ISN + 1  # the segment was dropped
    assert h.connection.snd_una == ISS + 1


def test_local_misuse_raises_local_protocol_error() -> None:
    h = Harness()
    h.handshake()
    flow = h.flow
    h.endpoint.close(flow)
    with pytest.raises(LocalProtocolError):
        h.endpoint.close(flow)
    with pytest.raises(LocalProtocolError):
        h.endpoint.send(flow, b"after close")
    with pytest.raises(LocalProtocolError):
        h.endpoint.consumed(flow, -1)
    unknown = FlowId(6, ipaddress.ip_address("10.0.0.1"), 1, ipaddress.ip_address("10.0.0.2"), 2)
    with pytest.raises(LocalProtocolError):
        h.endpoint.send(unknown, b"x")


def test_sequence_numbers_wrap_around() -> None:
    wrap_iss = MASK - 100
    endpoint = NetworkEndpoint(ROUTED, lambda flow: True, initial_sequence=lambda: wrap_iss)
    client = ScriptedClient()
    isn = MASK - 50
    endpoint.receive(client.syn(isn), 0.0)
    endpoint.flush(0.0)
    endpoint.receive(client.tcp(isn + 1, wrap_iss + 1), 0.0)
    (connection,) = endpoint.tcp_connections
    flow = connection.flow
    payload = data(3000)
    endpoint.receive(client.tcp(isn + 1, wrap_iss + 1, ACK, payload), 0.0)
    endpoint.send(flow, payload)
    segments = [parse_written(p).tcp for p in endpoint.flush(0.0)]
    assert all(s is not None for s in segments)
    acks = [s.ack for s in segments if s is not None]
    assert acks[-1] == (isn + 1 + 3000) & MASK
    endpoint.receive(client.tcp(isn + 3001, (wrap_iss + 1 + 3000) & MASK), 0.0)
    assert connection.snd_una - connection.iss == 3001
    received = b"".join(e.data for e in endpoint.take_events() if isinstance(e, DataReceived))
    assert received == payload


# -- robustness in every state ------------------------------------------------------------


def drive_to(state: State) -> Harness:
    """A harness whose one connection is in `state` (passive side)."""
    h = Harness()
    seq = CLIENT_ISN + 1
    if state is State.SYN_RECEIVED:
        h.feed(h.client.syn(CLIENT_ISN))
        h.out()
        return h
    h.handshake()
    if state in (State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSING, State.TIME_WAIT):
        h.endpoint.close(h.flow)
        h.out()
        if state is State.FIN_WAIT_2:
            h.feed(h.client.tcp(seq, ISS + 2))
        elif state is State.CLOSING:
            h.feed(h.client.tcp(seq, ISS + 1, ACK | FIN))
        elif state is State.TIME_WAIT:
            h.feed(h.client.tcp(seq, ISS + 2, ACK | FIN))
    elif state in (State.CLOSE_WAIT, State.LAST_ACK):
        h.feed(h.client.tcp(seq, ISS + 1, ACK | FIN))
        if state is State.LAST_ACK:
            h.endpoint.close(h.flow)
    h.out()
    assert h.state() is state
    return h


segment_scripts = st.lists(
    st.tuples(
        st.sampled_from([0, 1, -1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1),
        st.sampled_from([0, 1, 2, -1]) | st.integers(0, 2**32 - 1),
        st.integers(0, 255),
        st.binary(max_size=64),
        st.integers(0, 65535),
    ),
    max_size=10,
)


@pytest.mark.parametrize(
    "state",
    [
        State.SYN_RECEIVED,
        State.ESTABLISHED,
        State.FIN_WAIT_1,
        State.FIN_WAIT_2,
        State.CLOSING,
        State.TIME_WAIT,
        State.CLOSE_WAIT,
        State.LAST_ACK,
    ],
)
@settings(max_examples=60)
@given(script=segment_scripts)
def test_arbitrary_segments_in_any_state_never_raise(
    state: State, script: list[tuple[int, int, int, bytes, int]]
) -> None:
    h = drive_to(state)
    original = h.connection
    events: list[Event] = h.events()  # TIME-WAIT has reported Closed already
    ended_at = next((i for i, e in enumerate(events) if isinstance(e, Closed | Reset)), None)
    reopened = False  # a SYN after the end may start a new connection on the 5-tuple
    for seq_offset, ack_offset, flags, payload, window in script:
        h.now += 0.25
        seq = (CLIENT_ISN + 1 + seq_offset) & MASK
        ack = (ISS + 1 + ack_offset) & MASK
        reopened = reopened or (ended_at is not None and bool(flags & SYN))
        h.feed(h.client.tcp(seq, ack, flags, payload, window))
        h.out()
        h.endpoint.on_timer(h.now)
        for event in h.events():
            if ended_at is not None and not reopened:
                pytest.fail(f"{event} after the connection ended with {events[ended_at]}")
            events.append(event)
            if isinstance(event, Closed | Reset) and ended_at is None:
                ended_at = len(events) - 1
            if isinstance(event, DataReceived):
                h.endpoint.consumed(event.flow, len(event.data))
    if ended_at is not None:
        assert original.state in (State.CLOSED, State.TIME_WAIT)
