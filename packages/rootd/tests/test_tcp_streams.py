"""Two TCP engines over an imperfect link always deliver both byte streams and close.

The client is a bare `TcpConnection` opened actively (the reference peer); the server is
the `NetworkEndpoint` the TUN feeds. The link between them loses, duplicates, reorders and
delays packets from a seeded generator; hypothesis picks the seed, the stream sizes, the
buffer sizes, how eagerly each application reads, and the packet framing (vnet header,
checksum offload, GSO super-segments).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubepresence.rootd.core.endpoint import EndpointConfig, NetworkEndpoint
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import (
    NO_VNET_HEADER,
    PROTO_TCP,
    Chunk,
    OutputMode,
    PacketWriter,
    packet_bytes,
)
from kubepresence.rootd.core.tcp import (
    Closed,
    Connected,
    DataReceived,
    PeerClosed,
    Reset,
    TcpConfig,
    TcpConnection,
    TcpEvent,
    segment_builder,
)
from kubepresence.rootd.core.testing import ImperfectLink, parse_written

ROUTED = [ipaddress.ip_network("198.18.0.0/15")]
CLIENT = ipaddress.ip_address("10.1.0.2")
SERVER = ipaddress.ip_address("198.18.0.10")
MAX_STEPS = 200_000
MAX_SIM_SECONDS = 5_000.0
BUDGET = 64


def robust_config(mss: int, buffer: int) -> TcpConfig:
    """Generous retries and TIME-WAIT: the property is about convergence, not giving up."""
    return TcpConfig(
        mss=mss,
        receive_buffer=buffer,
        send_buffer=buffer,
        time_wait=30.0,
        max_retransmissions=15,
        max_syn_retransmissions=15,
        max_rto=1.0,
    )


@dataclass
class Side:
    """One application: what it must send, what it got, how it ended."""

    to_send: bytes
    sent: int = 0
    received: bytearray = field(default_factory=bytearray)
    unconsumed: int = 0
    closed_sending: bool = False
    peer_closed: bool = False
    terminal: TcpEvent | None = None


@dataclass(frozen=True)
class Scenario:
    seed: int
    upload: int
    download: int
    loss: float
    duplicate: float
    reorder: float
    client_buffer: int
    server_buffer: int
    read_eagerness: float
    mode: OutputMode
    mtu: int


def run(scenario: Scenario) -> tuple[Side, Side, NetworkEndpoint]:
    rng = random.Random(scenario.seed)
    client_side = Side(rng.randbytes(scenario.upload))
    server_side = Side(rng.randbytes(scenario.download))
    client_events: list[TcpEvent] = []
    flow = FlowId(PROTO_TCP, CLIENT, 40000, SERVER, 80)
    writer = PacketWriter(CLIENT.packed, SERVER.packed, OutputMode())
    client = TcpConnection(
        flow,
        segment_builder(writer.tcp, 40000, 80),
        client_events.append,
        robust_config(scenario.mtu - 40, scenario.client_buffer),
        rng.getrandbits(32),
    )
    endpoint = NetworkEndpoint(
        ROUTED,
        lambda flow: True,
        EndpointConfig(
            mtu=scenario.mtu,
            output=scenario.mode,
            tcp=robust_config(scenario.mtu - 40, scenario.server_buffer),
        ),
        initial_sequence=lambda: rng.getrandbits(32),
    )
    up = ImperfectLink(rng, scenario.loss, scenario.duplicate, scenario.reorder)
    down = ImperfectLink(rng, scenario.loss, scenario.duplicate, scenario.reorder)
    vnet = scenario.mode.vnet_header
    server_flow: FlowId | None = None
    now = 0.0
    client.open_active(now)

    def application(side: Side, events: Iterable[object]) -> None:
        for event in events:
            if isinstance(event, DataReceived):
                side.received += event.data
                side.unconsumed += len(event.data)
            elif isinstance(event, PeerClosed):
                side.peer_closed = True
            elif isinstance(event, Closed | Reset):
                assert side.terminal is None, "two terminal events"
                side.terminal = event

    for _ in range(MAX_STEPS):
        # Applications: read (maybe not all at once), send what fits, close when done.
        application(client_side, client_events)
        client_events.clear()
        for event in endpoint.take_events():
            if isinstance(event, Connected):
                server_flow = event.flow
            assert not isinstance(event, Reset), event
            application(server_side, [event])
        if client_side.unconsumed and rng.random() < scenario.read_eagerness:
            client.consumed(client_side.unconsumed)
            client_side.unconsumed = 0
        if server_flow is not None and endpoint.has_flow(server_flow):
            if server_side.unconsumed and rng.random() < scenario.read_eagerness:
                endpoint.consumed(server_flow, server_side.unconsumed)
                server_side.unconsumed = 0
            pump_server(endpoint, server_flow, server_side)
        if client.state.value in ("ESTABLISHED", "CLOSE-WAIT"):
            pump_client(client, client_side)

        # Wire: produce, carry, deliver.
        out: list[list[Chunk]] = []
        client.produce(now, out, BUDGET)
        for packet in out:
            wire = packet_bytes(packet)
            up.put(NO_VNET_HEADER + wire if vnet else wire, now)
        for packet in endpoint.flush(now, BUDGET):
            down.put(packet_bytes(packet), now)

        if client_side.terminal and server_side.terminal:
            break
        if client.wants_to_produce or endpoint.has_output:
            continue
        candidates = [
            t
            for t in (
                up.next_arrival(),
                down.next_arrival(),
                client.deadline,
                endpoint.next_deadline(),
            )
            if t is not None
        ]
        assert candidates, "stuck: nothing in flight and no timer"
        now = max(now, min(candidates))
        assert now < MAX_SIM_SECONDS, "did not converge in simulated time"
        for arrived in up.due(now):
            endpoint.receive(arrived, now)
        for arrived in down.due(now):
            tcp = parse_written([arrived], vnet_header=vnet).tcp
            assert tcp is not None
            client.receive(tcp, now)
        if client.deadline is not None and client.deadline <= now:
            client.on_timer(now)
        endpoint.on_timer(now)
    else:
        raise AssertionError("did not converge in MAX_STEPS")
    return client_side, server_side, endpoint


def pump_client(client: TcpConnection, side: Side) -> None:
    if side.sent < len(side.to_send):
        side.sent += client.send(side.to_send[side.sent : side.sent + 50_000])
    if side.sent == len(side.to_send) and not side.closed_sending:
        side.closed_sending = True
        client.close()


def pump_server(endpoint: NetworkEndpoint, flow: FlowId, side: Side) -> None:
    connection = endpoint.connection(flow)
    if connection.state.value not in ("ESTABLISHED", "CLOSE-WAIT"):
        return
    if side.sent < len(side.to_send):
        side.sent += endpoint.send(flow, side.to_send[side.sent : side.sent + 50_000])
    if side.sent == len(side.to_send) and not side.closed_sending:
        side.closed_sending = True
        endpoint.close(flow)


modes = st.sampled_from(
    [
        OutputMode(),
        OutputMode(vnet_header=True),
        OutputMode(vnet_header=True, checksum_offload=True),
        OutputMode(vnet_header=True, checksum_offload=True, gso=True),
    ]
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    return Scenario(
        seed=draw(st.integers(0, 2**32)),
        upload=draw(st.sampled_from([0, 1, 1000, 20_000, 150_000])),
        download=draw(st.sampled_from([0, 1, 1000, 20_000, 150_000])),
        loss=draw(st.sampled_from([0.0, 0.01, 0.1, 0.2])),
        duplicate=draw(st.sampled_from([0.0, 0.05, 0.2])),
        reorder=draw(st.sampled_from([0.0, 0.1, 0.3])),
        client_buffer=draw(st.sampled_from([3000, 16_384, 1 << 20])),
        server_buffer=draw(st.sampled_from([3000, 16_384, 1 << 20])),
        read_eagerness=draw(st.sampled_from([1.0, 0.3])),
        mode=draw(modes),
        mtu=draw(st.sampled_from([576, 1500, 9000])),
    )


def check(scenario: Scenario) -> None:
    client_side, server_side, _endpoint = run(scenario)
    assert bytes(server_side.received) == client_side.to_send
    assert bytes(client_side.received) == server_side.to_send
    assert client_side.peer_closed
    assert server_side.peer_closed
    assert isinstance(client_side.terminal, Closed), client_side.terminal
    assert isinstance(server_side.terminal, Closed), server_side.terminal


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_streams_arrive_exactly_and_close_over_any_link(scenario: Scenario) -> None:
    check(scenario)


def test_a_perfect_link_moves_a_megabyte_each_way() -> None:
    check(
        Scenario(
            seed=1,
            upload=1 << 20,
            download=1 << 20,
            loss=0.0,
            duplicate=0.0,
            reorder=0.0,
            client_buffer=1 << 20,
            server_buffer=1 << 20,
            read_eagerness=1.0,
            mode=OutputMode(vnet_header=True, checksum_offload=True, gso=True),
            mtu=1500,
        )
    )


def test_a_bad_link_still_converges() -> None:
    check(
        Scenario(
            seed=7,
            upload=300_000,
            download=300_000,
            loss=0.25,
            duplicate=0.2,
            reorder=0.3,
            client_buffer=16_384,
            server_buffer=16_384,
            read_eagerness=0.3,
            mode=OutputMode(),
            mtu=1500,
        )
    )
