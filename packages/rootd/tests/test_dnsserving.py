"""net.dnsserving: cluster names through a fake lookup, the rest to a real UDP upstream on
127.0.0.1 (an ephemeral port), SERVFAIL when nobody answers."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import AsyncIterator
from typing import cast

import dnslib
import pytest
from kptest.waiting import eventually

from kubepresence.rootd.core.dns import NXDOMAIN, SERVFAIL, DnsPolicy, TcpFramer
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import PROTO_TCP, Chunk
from kubepresence.rootd.net.dnsserving import DnsService
from kubepresence.rootd.net.streams import TcpStream


def question(name: str, qtype: str = "A", qid: int = 100) -> bytes:
    record = dnslib.DNSRecord.question(name, qtype)
    record.header.id = qid
    return bytes(record.pack())


def packed(zone: str) -> bytes:
    buffer = dnslib.DNSBuffer()
    dnslib.RR.fromZone(zone)[0].pack(buffer)
    return bytes(buffer.data)


class Upstream(asyncio.DatagramProtocol):
    """The previous resolver: NXDOMAIN for everything, remembering what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dnslib.DNSRecord.parse(data)
        self.asked.append(str(query.q.qname))
        reply = query.reply()
        reply.header.rcode = NXDOMAIN
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


class Lookups:
    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []
        self.fail: BaseException | None = None
        self.delay = 0.0
        self.gate: asyncio.Event | None = None  # lookups wait until it is set

    async def __call__(self, name: str, qtype: int) -> tuple[int, list[bytes]]:
        self.asked.append((name, qtype))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if name.startswith("echo."):
            return 0, [packed(f"{name} 5 IN A 10.96.7.7")]
        return NXDOMAIN, []


def service(
    lookups: Lookups, port: int, upstreams: list[str] | None = None, lookup_timeout: float = 0.2
) -> DnsService:
    return DnsService(
        DnsPolicy("cluster.local"),
        lookups,
        ["127.0.0.1"] if upstreams is None else upstreams,
        upstream_port=port,
        lookup_timeout=lookup_timeout,
        upstream_timeout=0.2,
    )


async def test_cluster_names_go_to_the_cluster_only(upstream: tuple[Upstream, int]) -> None:
    server, port = upstream
    lookups = Lookups()
    dns = service(lookups, port)
    reply = await dns.answer(question("echo.demo.svc.cluster.local", qid=31), udp=True)
    assert reply is not None
    parsed = dnslib.DNSRecord.parse(reply)
    assert parsed.header.id == 31
    assert [str(rr.rdata) for rr in parsed.rr] == ["10.96.7.7"]
    assert lookups.asked == [("echo.demo.svc.cluster.local.", 1)]
    assert server.asked == []
    nx = await dns.answer(question("nope.demo.svc.cluster.local"), udp=True)
    assert nx is not None
    assert dnslib.DNSRecord.parse(nx).header.rcode == NXDOMAIN


async def test_short_names_under_a_known_namespace_never_reach_the_upstream(
    upstream: tuple[Upstream, int],
) -> None:
    server, port = upstream
    lookups = Lookups()
    dns = DnsService(
        DnsPolicy("cluster.local", ["demo"]),
        lookups,
        ["127.0.0.1"],
        upstream_port=port,
        lookup_timeout=0.2,
        upstream_timeout=0.2,
    )
    for _ in range(2):  # the second from the cache, under the same name
        reply = await dns.answer(question("echo.demo", qid=8), udp=True)
        assert reply is not None
        parsed = dnslib.DNSRecord.parse(reply)
        assert [(str(rr.rname), str(rr.rdata)) for rr in parsed.rr] == [("echo.demo.", "10.96.7.7")]
    nx = await dns.answer(question("nosuchsvc.demo"), udp=True)
    assert nx is not None
    assert dnslib.DNSRecord.parse(nx).header.rcode == NXDOMAIN
    assert lookups.asked == [
        ("echo.demo.svc.cluster.local.", 1),
        ("nosuchsvc.demo.svc.cluster.local.", 1),
    ]
    assert dns.counters.kept == 1
    assert server.asked == []


async def test_other_names_are_forwarded_unchanged(upstream: tuple[Upstream, int]) -> None:
    server, port = upstream
    lookups = Lookups()
    dns = service(lookups, port)
    reply = await dns.answer(question("example.com", "AAAA", qid=55), udp=True)
    assert reply is not None
    parsed = dnslib.DNSRecord.parse(reply)
    assert (parsed.header.id, parsed.header.rcode) == (55, NXDOMAIN)
    assert server.asked == ["example.com."]
    assert lookups.asked == []
    assert dns.counters.upstream == 1


async def test_no_upstream_answer_is_servfail() -> None:
    # A port nobody listens on: ICMP port unreachable, or silence; either way SERVFAIL.
    dns = service(Lookups(), 9, ["127.0.0.1", "127.0.0.2"])
    reply = await asyncio.wait_for(dns.answer(question("example.com", qid=8), udp=True), 2)
    assert reply is not None
    parsed = dnslib.DNSRecord.parse(reply)
    assert (parsed.header.id, parsed.header.rcode) == (8, SERVFAIL)
    assert dns.counters.failed == 1


async def test_a_failing_or_slow_cluster_lookup_is_servfail(
    upstream: tuple[Upstream, int],
) -> None:
    _, port = upstream
    lookups = Lookups()
    dns = service(lookups, port)
    lookups.fail = ConnectionRefusedError("userd is gone")
    reply = await dns.answer(question("echo.demo.svc.cluster.local"), udp=True)
    assert reply is not None
    assert dnslib.DNSRecord.parse(reply).header.rcode == SERVFAIL
    lookups.fail = None
    lookups.delay = 1.0
    reply = await asyncio.wait_for(dns.answer(question("echo.x.svc.cluster.local"), udp=True), 1)
    assert reply is not None
    assert dnslib.DNSRecord.parse(reply).header.rcode == SERVFAIL


async def test_garbage_gets_formerr_or_nothing(upstream: tuple[Upstream, int]) -> None:
    _, port = upstream
    dns = service(Lookups(), port)
    assert await dns.answer(b"\x01", udp=True) is None
    reply = await dns.answer(b"\x00\x07\x01\x00" + b"\xff" * 12, udp=True)
    assert reply is not None
    assert reply[:2] == b"\x00\x07"
    assert reply[3] & 0xF == 1


class Owner:
    def __init__(self) -> None:
        self.out = bytearray()
        self.fin = False

    def stream_send(self, flow: FlowId, data: Chunk) -> int:
        self.out += data
        return len(data)

    def stream_consumed(self, flow: FlowId, count: int) -> None:
        pass

    def stream_close(self, flow: FlowId) -> None:
        self.fin = True

    def stream_abort(self, flow: FlowId) -> None:
        pass


async def test_dns_over_tcp_answers_each_framed_query(upstream: tuple[Upstream, int]) -> None:
    _, port = upstream
    dns = service(Lookups(), port)
    owner = Owner()
    flow = FlowId(
        PROTO_TCP, ipaddress.ip_address("10.77.0.2"), 1, ipaddress.ip_address("10.96.0.10"), 53
    )
    stream = TcpStream(flow, owner)
    data = TcpFramer.frame(question("echo.a.svc.cluster.local", qid=1)) + TcpFramer.frame(
        question("example.org", qid=2)
    )
    stream.feed(data[:5])
    stream.feed(data[5:])
    stream.feed_eof()
    task = asyncio.create_task(dns.serve_tcp(stream))
    await eventually(lambda: owner.fin, "both answered and the stream closed")
    stream.finish(None)
    await asyncio.wait_for(task, 1)
    replies = TcpFramer().feed(bytes(owner.out))
    assert [dnslib.DNSRecord.parse(r).header.id for r in replies] == [1, 2]
    assert dnslib.DNSRecord.parse(replies[0]).rr[0].rdata is not None
    assert dnslib.DNSRecord.parse(replies[1]).header.rcode == NXDOMAIN
    assert owner.fin


class TruncatingUpstream(asyncio.DatagramProtocol):
    """Answers over UDP with TC set and nothing else: the answer needs TCP."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = dnslib.DNSRecord.parse(data).reply()
        reply.header.tc = 1
        self.transport.sendto(reply.pack(), addr)


async def test_a_truncated_upstream_answer_is_fetched_over_tcp_for_tcp_clients() -> None:
    asked_over_tcp: list[str] = []

    async def tcp_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        query = dnslib.DNSRecord.parse(await reader.readexactly(length))
        asked_over_tcp.append(str(query.q.qname))
        reply = query.reply()
        reply.add_answer(*dnslib.RR.fromZone(f"{query.q.qname} 60 IN A 192.0.2.7"))
        writer.write(TcpFramer.frame(bytes(reply.pack())))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(tcp_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        TruncatingUpstream, local_addr=("127.0.0.1", port)
    )
    try:
        dns = service(Lookups(), port)
        over_udp = await dns.answer(question("big.example", qid=3), udp=True)
        assert over_udp is not None
        assert dnslib.DNSRecord.parse(over_udp).header.tc == 1  # passed on: retry over TCP
        assert asked_over_tcp == []
        over_tcp = await dns.answer(question("big.example", qid=4), udp=False)
        assert over_tcp is not None
        parsed = dnslib.DNSRecord.parse(over_tcp)
        assert parsed.header.id == 4
        assert parsed.header.tc == 0
        assert [str(rr.rdata) for rr in parsed.rr] == ["192.0.2.7"]
        assert asked_over_tcp == ["big.example."]
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


async def test_a_burst_of_one_question_is_one_lookup(upstream: tuple[Upstream, int]) -> None:
    lookups = Lookups()
    lookups.gate = asyncio.Event()
    dns = service(lookups, upstream[1], lookup_timeout=5.0)
    askers = [
        asyncio.ensure_future(dns.answer(question("echo.shop.svc.cluster.local", qid=i), udp=True))
        for i in range(500)
    ]
    askers.append(
        asyncio.ensure_future(
            dns.answer(question("echo.shop.svc.cluster.local", "AAAA", qid=999), udp=True)
        )
    )
    # Every asker is in before the lookups answer (a time-bound delay was load-dependent
    # against the 0.2 s lookup timeout).
    async with asyncio.timeout(5):
        while dns.counters.shared < 499:  # noqa: ASYNC110 - the counter has no event
            await asyncio.sleep(0)
    lookups.gate.set()
    replies = await asyncio.gather(*askers)
    # One lookup per distinct question, every asker answered under its own query id.
    assert sorted(lookups.asked) == [
        ("echo.shop.svc.cluster.local.", 1),
        ("echo.shop.svc.cluster.local.", 28),
    ]
    parsed = [dnslib.DNSRecord.parse(r) for r in replies if r is not None]
    assert [p.header.id for p in parsed] == [*range(500), 999]
    assert all(str(p.rr[0].rdata) == "10.96.7.7" for p in parsed[:500])
    assert dns.counters.shared == 499
    # The answer is kept: the next question within its TTL is not asked again.
    await dns.answer(question("echo.shop.svc.cluster.local", qid=1000), udp=True)
    assert len(lookups.asked) == 2
    assert dns.counters.kept == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_answers_are_kept_for_their_ttl_and_age_in_replies(
    upstream: tuple[Upstream, int],
) -> None:
    lookups, clock = Lookups(), Clock()
    dns = DnsService(DnsPolicy("cluster.local"), lookups, [], clock=clock)

    async def ask(name: str, qid: int) -> dnslib.DNSRecord:
        reply = await dns.answer(question(name, qid=qid), udp=True)
        assert reply is not None
        return dnslib.DNSRecord.parse(reply)

    first = await ask("echo.shop.svc.cluster.local", 1)
    assert [rr.ttl for rr in first.rr] == [5]
    clock.now += 3.2
    kept = await ask("ECHO.shop.svc.cluster.local", 2)  # names are case-insensitive
    assert kept.header.id == 2
    assert [(str(rr.rdata), rr.ttl) for rr in kept.rr] == [("10.96.7.7", 2)]
    assert len(lookups.asked) == 1
    clock.now += 2.0  # 5.2 s after the lookup: the TTL is over
    await ask("echo.shop.svc.cluster.local", 3)
    assert len(lookups.asked) == 2
    # A name that does not exist is kept for the negative TTL, then asked again.
    missing = await ask("gone.shop.svc.cluster.local", 4)
    assert missing.header.rcode == NXDOMAIN
    clock.now += 4.9
    assert (await ask("gone.shop.svc.cluster.local", 5)).header.rcode == NXDOMAIN
    assert len(lookups.asked) == 3
    clock.now += 0.2
    await ask("gone.shop.svc.cluster.local", 6)
    assert len(lookups.asked) == 4
    # A failed lookup is not kept.
    lookups.fail = ConnectionError("userd is gone")
    assert (await ask("other.shop.svc.cluster.local", 7)).header.rcode == SERVFAIL
    lookups.fail = None
    assert (await ask("other.shop.svc.cluster.local", 8)).header.rcode == NXDOMAIN
    assert lookups.asked[-2:] == [("other.shop.svc.cluster.local.", 1)] * 2


async def test_a_failed_shared_lookup_fails_every_asker(upstream: tuple[Upstream, int]) -> None:
    lookups = Lookups()
    lookups.delay = 0.05
    lookups.fail = ConnectionError("userd is gone")
    dns = service(lookups, upstream[1])
    replies = await asyncio.gather(
        *(dns.answer(question("echo.shop.svc.cluster.local", qid=i), udp=True) for i in range(20))
    )
    assert len(lookups.asked) == 1
    assert {dnslib.DNSRecord.parse(r).header.rcode for r in replies if r} == {SERVFAIL}
    assert len([r for r in replies if r]) == 20


async def test_an_abandoned_first_lookup_does_not_hang_the_others(
    upstream: tuple[Upstream, int],
) -> None:
    lookups = Lookups()
    lookups.delay = 0.2
    dns = service(lookups, upstream[1])
    first = asyncio.create_task(dns.answer(question("echo.shop.svc.cluster.local"), udp=True))
    await eventually(lambda: lookups.asked, "the first lookup in flight")
    second = asyncio.create_task(
        dns.answer(question("echo.shop.svc.cluster.local", qid=2), udp=True)
    )
    # The second query joins the lookup in flight without waiting on anything else: a
    # few turns of the loop (no time) bring it there.
    for _ in range(5):
        await asyncio.sleep(0)
    first.cancel()
    reply = await asyncio.wait_for(second, 2)
    assert reply is not None
    assert dnslib.DNSRecord.parse(reply).header.rcode == SERVFAIL  # the client asks again
