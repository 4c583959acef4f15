"""net.relaying: flows between terminated connections and tunnels, against in-memory fakes.

The streams are real `TcpStream`s over a fake owner (what the terminator would do with the
bytes is recorded); tunnels are in-memory queues that a test plays the far end of.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator

import pytest
from kptest.waiting import eventually

from kubepresence.rootd.core.errors import LocalProtocolError
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import PROTO_TCP, PROTO_UDP, Chunk
from kubepresence.rootd.net import relaying
from kubepresence.rootd.net.relaying import (
    ClusterRelay,
    TunnelEvent,
    TunnelEventKind,
    relay_tcp,
)
from kubepresence.rootd.net.streams import TcpStream

CLIENT = ipaddress.ip_address("10.77.0.2")
SERVICE = ipaddress.ip_address("10.96.5.5")
DNS = ipaddress.ip_address("10.96.0.10")
TCP_FLOW = FlowId(PROTO_TCP, CLIENT, 40000, SERVICE, 80)
UDP_FLOW = FlowId(PROTO_UDP, CLIENT, 40001, SERVICE, 9001)
K = TunnelEventKind


class Owner:
    """The terminator's side of a TcpStream: records what the relay sends to the client."""

    def __init__(self, space: int = 1 << 30) -> None:
        self.space = space
        self.to_client = bytearray()
        self.consumed = 0
        self.fin = False
        self.rst = False
        self.stream: TcpStream | None = None

    def stream_send(self, flow: FlowId, data: Chunk) -> int:
        taken = min(self.space, len(data))
        self.to_client += data[:taken]
        self.space -= taken
        return taken

    def stream_consumed(self, flow: FlowId, count: int) -> None:
        self.consumed += count

    def stream_close(self, flow: FlowId) -> None:
        self.fin = True

    def stream_abort(self, flow: FlowId) -> None:
        self.rst = True
        if self.stream is not None:
            self.stream.finish("aborted")


def new_stream(owner: Owner, flow: FlowId = TCP_FLOW) -> TcpStream:
    stream = TcpStream(flow, owner)
    owner.stream = stream
    return stream


class FakeTunnel:
    """One tunnel; `far` is what the cluster side does, `sent` what reached it."""

    def __init__(self) -> None:
        self.far: asyncio.Queue[TunnelEvent] = asyncio.Queue()
        self.sent: list[tuple[str, bytes | str]] = []
        self.ended = False
        self.finished = False
        self.receives = 0  # calls of receive: the relay is waiting for the far end

    async def receive(self) -> TunnelEvent:
        self.receives += 1
        if self.finished:
            return TunnelEvent(K.END)
        event = await self.far.get()
        if event.kind == K.END:
            self.finished = True
        return event

    async def send_data(self, data: bytes) -> None:
        assert not self.ended
        self.sent.append(("data", bytes(data)))

    async def send_write_closed(self) -> None:
        self.sent.append(("write-closed", ""))

    async def send_reset(self, reason: str) -> None:
        self.sent.append(("reset", reason))

    async def end(self) -> None:
        self.ended = True

    def data(self) -> bytes:
        return b"".join(d for kind, d in self.sent if kind == "data" and isinstance(d, bytes))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.sent]


def far(tunnel: FakeTunnel, *events: TunnelEvent) -> None:
    for event in events:
        tunnel.far.put_nowait(event)


async def test_bytes_both_ways_with_half_close_then_a_clean_end() -> None:
    owner = Owner()
    stream = new_stream(owner)
    tunnel = FakeTunnel()
    task = asyncio.create_task(relay_tcp(stream, tunnel))
    stream.feed(b"GET / HTTP/1.0\r\n\r\n")
    stream.feed_eof()  # the client half-closes
    await eventually(lambda: "write-closed" in tunnel.kinds(), "the half-close relayed")
    assert tunnel.data() == b"GET / HTTP/1.0\r\n\r\n"
    assert tunnel.kinds()[-1] == "write-closed"
    assert not task.done()  # the answer may still come
    far(tunnel, TunnelEvent(K.DATA, b"HTTP/1.0 200 OK\r\n"), TunnelEvent(K.DATA, b"\r\nbody"))
    far(tunnel, TunnelEvent(K.WRITE_CLOSED), TunnelEvent(K.END))
    await eventually(lambda: owner.fin, "the far end's close relayed")
    assert owner.to_client == b"HTTP/1.0 200 OK\r\n\r\nbody"
    assert owner.fin
    stream.finish(None)  # the client acknowledged our FIN
    assert await asyncio.wait_for(task, 1) is None
    assert tunnel.ended
    assert not owner.rst


async def test_the_cluster_may_close_first_and_the_client_keeps_sending() -> None:
    owner = Owner()
    stream = new_stream(owner)
    tunnel = FakeTunnel()
    task = asyncio.create_task(relay_tcp(stream, tunnel))
    far(tunnel, TunnelEvent(K.DATA, b"banner"), TunnelEvent(K.WRITE_CLOSED))
    await eventually(lambda: owner.fin, "the far end's close relayed")
    assert owner.to_client == b"banner"
    stream.feed(b"still talking")
    stream.feed_eof()
    await eventually(lambda: "write-closed" in tunnel.kinds(), "the half-close relayed")
    assert tunnel.data() == b"still talking"
    far(tunnel, TunnelEvent(K.END))
    stream.finish(None)
    assert await asyncio.wait_for(task, 1) is None


async def test_many_small_reads_are_coalesced_into_large_messages() -> None:
    owner = Owner()
    stream = new_stream(owner)
    tunnel = FakeTunnel()
    payload = bytes(range(256)) * 64 * 40  # 640 KiB in 16 KiB segments
    for offset in range(0, len(payload), 16384):
        stream.feed(payload[offset : offset + 16384])
    stream.feed_eof()
    task = asyncio.create_task(relay_tcp(stream, tunnel, message_size=256 * 1024))
    await eventually(lambda: "write-closed" in tunnel.kinds(), "all read and the close relayed")
    messages = [d for kind, d in tunnel.sent if kind == "data"]
    assert tunnel.data() == payload
    assert max(map(len, messages)) <= 256 * 1024
    assert len(messages) <= 4, [len(m) for m in messages]  # not 40
    far(tunnel, TunnelEvent(K.WRITE_CLOSED), TunnelEvent(K.END))
    await eventually(lambda: owner.fin, "the far end's close relayed")
    stream.finish(None)
    assert await asyncio.wait_for(task, 1) is None


async def test_reading_stops_while_the_tunnel_does_not_take_data() -> None:
    """Backpressure: a stalled tunnel stops reads, so TCP's window closes on the client."""
    owner = Owner()
    stream = new_stream(owner)
    gate = asyncio.Event()

    class SlowTunnel(FakeTunnel):
        sending = False

        async def send_data(self, data: bytes) -> None:
            self.sending = True
            await gate.wait()
            await super().send_data(data)

    tunnel = SlowTunnel()
    for _ in range(100):
        stream.feed(b"x" * 65536)
    task = asyncio.create_task(relay_tcp(stream, tunnel, message_size=65536))
    # The relay reached the stuck send and filled its queue behind it; reads of data
    # already fed never wait, so a reader that did not stop would have taken it all by now.
    await eventually(lambda: tunnel.sending, "the first send started")
    full = relaying.QUEUE_CHUNKS * 65536
    await eventually(lambda: owner.consumed >= full, "the queue filled")
    for _ in range(10):
        await asyncio.sleep(0)  # turns of the loop for a reader that would not stop
    # One message in the (stuck) send, at most QUEUE_CHUNKS waiting, one read blocked.
    assert owner.consumed <= (relaying.QUEUE_CHUNKS + 2) * 65536
    gate.set()
    stream.feed_eof()
    far(tunnel, TunnelEvent(K.WRITE_CLOSED), TunnelEvent(K.END))
    await eventually(lambda: owner.fin and "write-closed" in tunnel.kinds(), "both closes relayed")
    stream.finish(None)
    assert await asyncio.wait_for(task, 2) is None
    assert len(tunnel.data()) == 100 * 65536


async def test_a_reset_from_the_cluster_resets_the_client() -> None:
    owner = Owner()
    stream = new_stream(owner)
    tunnel = FakeTunnel()
    task = asyncio.create_task(relay_tcp(stream, tunnel))
    far(tunnel, TunnelEvent(K.RESET, message="connection reset by peer"))
    reason = await asyncio.wait_for(task, 1)
    assert reason is not None
    assert "connection reset by peer" in reason
    assert owner.rst
    assert tunnel.ended


async def test_a_client_reset_resets_the_tunnel() -> None:
    owner = Owner()
    stream = new_stream(owner)
    tunnel = FakeTunnel()
    task = asyncio.create_task(relay_tcp(stream, tunnel))
    await eventually(lambda: tunnel.receives, "the relay waits on both sides")
    stream.finish("RST from the client")
    reason = await asyncio.wait_for(task, 1)
    assert reason is not None
    assert "client reset" in reason
    assert tunnel.kinds() == ["reset"]


async def test_a_tunnel_that_ends_without_closing_is_a_reset() -> None:
    owner = Owner()
    stream = new_stream(owner)
    tunnel = FakeTunnel()
    task = asyncio.create_task(relay_tcp(stream, tunnel))
    far(tunnel, TunnelEvent(K.DATA, b"partial"), TunnelEvent(K.END))
    reason = await asyncio.wait_for(task, 1)
    assert reason is not None
    assert "ended early" in reason
    assert owner.rst


async def test_a_broken_channel_aborts_the_client_and_propagates() -> None:
    owner = Owner()
    stream = new_stream(owner)

    class Broken(FakeTunnel):
        async def receive(self) -> TunnelEvent:
            raise ConnectionResetError("userd tunnel: connection lost")

    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(relay_tcp(stream, Broken()), 1)
    assert owner.rst


# -- the relay: admission, UDP, DNS --------------------------------------------------


class FakeTerminator:
    def __init__(self) -> None:
        self.decisions: list[tuple[FlowId, bool]] = []
        self.datagrams: list[tuple[FlowId, bytes]] = []
        self.pending = True
        self.gone: set[FlowId] = set()

    def decide(self, flow: FlowId, accepted: bool) -> bool:
        self.decisions.append((flow, accepted))
        return self.pending

    def send_datagram(self, flow: FlowId, data: bytes) -> None:
        if flow in self.gone:
            raise LocalProtocolError("no such flow")
        self.datagrams.append((flow, bytes(data)))


class FakeCluster:
    def __init__(self) -> None:
        self.tunnels: dict[FlowId, FakeTunnel] = {}
        self.opened = asyncio.Queue[FakeTunnel]()
        self.refuse_channel: BaseException | None = None

    @contextlib.asynccontextmanager
    async def tunnel(self, flow: FlowId) -> AsyncIterator[FakeTunnel]:
        if self.refuse_channel is not None:
            raise self.refuse_channel
        tunnel = FakeTunnel()
        self.tunnels[flow] = tunnel
        self.opened.put_nowait(tunnel)
        yield tunnel


class FakeDns:
    def __init__(self) -> None:
        self.queries: list[tuple[bytes, bool]] = []
        self.tcp: list[TcpStream] = []

    async def answer(self, query: bytes, *, udp: bool) -> bytes | None:
        self.queries.append((query, udp))
        return b"answer:" + query

    async def serve_tcp(self, stream: TcpStream) -> None:
        self.tcp.append(stream)


async def relay_env() -> tuple[ClusterRelay, FakeCluster, FakeTerminator, FakeDns, list[object]]:
    cluster, terminator, dns = FakeCluster(), FakeTerminator(), FakeDns()
    channel_errors: list[object] = []
    group = asyncio.TaskGroup()
    await group.__aenter__()
    relay = ClusterRelay(
        cluster, group, dns, DNS, terminator, on_channel_error=channel_errors.append
    )
    relay._test_group = group  # type: ignore[attr-defined]
    return relay, cluster, terminator, dns, channel_errors


async def close_env(relay: ClusterRelay) -> None:
    relay.close()
    await relay._test_group.__aexit__(None, None, None)  # type: ignore[attr-defined]


async def test_a_tcp_syn_waits_for_the_dial_and_then_relays() -> None:
    relay, cluster, terminator, _, _ = await relay_env()
    try:
        assert relay.accept(TCP_FLOW) is None  # deferred
        tunnel = await asyncio.wait_for(cluster.opened.get(), 1)
        assert terminator.decisions == []
        far(tunnel, TunnelEvent(K.CONNECTED))
        await eventually(lambda: terminator.decisions, "the SYN decided")
        assert terminator.decisions == [(TCP_FLOW, True)]
        owner = Owner()
        stream = new_stream(owner)
        relay.tcp_connected(stream)
        stream.feed(b"ping")
        far(tunnel, TunnelEvent(K.DATA, b"pong"))
        await eventually(lambda: tunnel.data() and owner.to_client, "bytes both ways")
        assert tunnel.data() == b"ping"
        assert owner.to_client == b"pong"
        assert relay.open_flows == 1
        assert relay.tcp_relayed == 1
    finally:
        await close_env(relay)


async def test_a_failed_dial_refuses_the_syn() -> None:
    relay, cluster, terminator, _, _ = await relay_env()
    try:
        relay.accept(TCP_FLOW)
        tunnel = await asyncio.wait_for(cluster.opened.get(), 1)
        far(tunnel, TunnelEvent(K.DIAL_FAILED, message="connection refused"))
        await eventually(lambda: terminator.decisions, "the SYN decided")
        assert terminator.decisions == [(TCP_FLOW, False)]
        assert relay.tcp_refused == 1
        assert relay.open_flows == 0
    finally:
        await close_env(relay)


async def test_no_answer_in_time_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relaying, "DIAL_TIMEOUT", 0.05)
    relay, cluster, terminator, _, _ = await relay_env()
    try:
        relay.accept(TCP_FLOW)
        await asyncio.wait_for(cluster.opened.get(), 1)
        await eventually(lambda: terminator.decisions, "the SYN decided")
        assert terminator.decisions == [(TCP_FLOW, False)]
    finally:
        await close_env(relay)


async def test_an_unreachable_userd_refuses_and_is_reported() -> None:
    relay, cluster, terminator, _, errors = await relay_env()
    cluster.refuse_channel = ConnectionRefusedError("userd's socket refuses")
    try:
        relay.accept(TCP_FLOW)
        await eventually(lambda: terminator.decisions, "the SYN decided")
        assert terminator.decisions == [(TCP_FLOW, False)]
        assert len(errors) == 1
        assert isinstance(errors[0], ConnectionRefusedError)
    finally:
        await close_env(relay)


async def test_a_syn_that_timed_out_meanwhile_resets_the_tunnel() -> None:
    relay, cluster, terminator, _, _ = await relay_env()
    terminator.pending = False  # the endpoint refused it after its admission timeout
    try:
        relay.accept(TCP_FLOW)
        tunnel = await asyncio.wait_for(cluster.opened.get(), 1)
        far(tunnel, TunnelEvent(K.CONNECTED))
        await eventually(lambda: tunnel.sent, "the late answer handled")
        assert tunnel.kinds() == ["reset"]
        # A late handshake for it finds no tunnel and is reset.
        owner = Owner()
        relay.tcp_connected(new_stream(owner))
        assert owner.rst
    finally:
        await close_env(relay)


async def test_udp_datagrams_wait_for_the_tunnel_then_flow_both_ways() -> None:
    relay, cluster, terminator, _, _ = await relay_env()
    try:
        assert relay.accept(UDP_FLOW) is True
        relay.datagram(UDP_FLOW, b"one")
        relay.datagram(UDP_FLOW, b"two")
        tunnel = await asyncio.wait_for(cluster.opened.get(), 1)
        # The flow waits for the far end's answer with both datagrams queued.
        await eventually(lambda: tunnel.receives, "the flow waits for CONNECTED")
        assert tunnel.sent == []  # not before CONNECTED
        far(tunnel, TunnelEvent(K.CONNECTED), TunnelEvent(K.DATA, b"ONE"))
        await eventually(lambda: len(tunnel.sent) >= 2 and terminator.datagrams, "both ways")
        assert tunnel.sent == [("data", b"one"), ("data", b"two")]
        assert terminator.datagrams == [(UDP_FLOW, b"ONE")]
        relay.datagram(UDP_FLOW, b"three")
        await eventually(lambda: len(tunnel.sent) >= 3, "a third datagram sent")
        assert tunnel.sent[-1] == ("data", b"three")
        assert len(cluster.tunnels) == 1  # one tunnel per flow
        relay.datagram_flow_closed(UDP_FLOW)
        await eventually(lambda: tunnel.ended, "the tunnel ended")
        assert tunnel.kinds()[-1] == "write-closed"
        assert tunnel.ended
        far(tunnel, TunnelEvent(K.END))
        await eventually(lambda: relay.open_flows == 0, "the flow ended")
    finally:
        await close_env(relay)


async def test_dns_to_the_dns_address_is_answered_locally() -> None:
    relay, cluster, terminator, dns, _ = await relay_env()
    udp_dns = FlowId(PROTO_UDP, CLIENT, 5353, DNS, 53)
    tcp_dns = FlowId(PROTO_TCP, CLIENT, 5354, DNS, 53)
    try:
        assert relay.accept(udp_dns) is True
        assert relay.accept(tcp_dns) is True  # no dial: served here
        relay.datagram(udp_dns, b"q1")
        await eventually(lambda: terminator.datagrams, "the query answered")
        assert dns.queries == [(b"q1", True)]
        assert terminator.datagrams == [(udp_dns, b"answer:q1")]
        stream = new_stream(Owner(), tcp_dns)
        relay.tcp_connected(stream)
        await eventually(lambda: dns.tcp, "the TCP query served")
        assert dns.tcp == [stream]
        assert cluster.tunnels == {}
        # Port 53 elsewhere is an ordinary flow.
        other = FlowId(PROTO_UDP, CLIENT, 5355, SERVICE, 53)
        relay.datagram(other, b"q2")
        await eventually(lambda: cluster.tunnels, "a tunnel opened")
        assert other in cluster.tunnels
    finally:
        await close_env(relay)


async def test_a_closed_relay_refuses_new_flows_and_cancels_old_ones() -> None:
    relay, cluster, _, _, _ = await relay_env()
    relay.accept(TCP_FLOW)
    await asyncio.wait_for(cluster.opened.get(), 1)
    assert relay.open_flows == 1
    await close_env(relay)
    assert relay.open_flows == 0
    assert relay.accept(FlowId(PROTO_TCP, CLIENT, 1, SERVICE, 2)) is False


async def test_a_far_end_gone_after_both_closes_is_still_a_clean_end() -> None:
    """userd may reset its finished stream before our end: every byte went through."""
    owner = Owner()
    stream = new_stream(owner)

    class ResetAtTheEnd(FakeTunnel):
        async def receive(self) -> TunnelEvent:
            event = await super().receive()
            if event.kind == K.END:
                raise ConnectionResetError("Stream reset by remote party, error_code: 0")
            return event

    tunnel = ResetAtTheEnd()
    task = asyncio.create_task(relay_tcp(stream, tunnel))
    stream.feed(b"request")
    stream.feed_eof()
    far(tunnel, TunnelEvent(K.DATA, b"reply"), TunnelEvent(K.WRITE_CLOSED), TunnelEvent(K.END))
    await eventually(lambda: owner.fin and "write-closed" in tunnel.kinds(), "both closes relayed")
    stream.finish(None)
    assert await asyncio.wait_for(task, 1) is None
    assert owner.to_client == b"reply"
    assert not owner.rst
