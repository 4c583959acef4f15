"""core.dns: who answers a question, and the replies rootd builds (no sockets)."""

from __future__ import annotations

import struct

import dnslib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.rootd.core.dns import (
    CLASSIC_UDP_LIMIT,
    FORMERR,
    NXDOMAIN,
    SERVFAIL,
    BadQueryError,
    DnsPolicy,
    Route,
    TcpFramer,
    cluster_reply,
    error_reply,
    formerr_for,
    is_reply_to,
    parse_query,
    truncated,
)


def query_bytes(name: str, qtype: str = "A", qid: int = 4242, edns: int | None = None) -> bytes:
    record = dnslib.DNSRecord.question(name, qtype)
    record.header.id = qid
    if edns is not None:
        record.add_ar(dnslib.EDNS0(udp_len=edns))
    return bytes(record.pack())


def packed_rr(zone: str) -> bytes:
    buffer = dnslib.DNSBuffer()
    dnslib.RR.fromZone(zone)[0].pack(buffer)
    return bytes(buffer.data)


POLICY = DnsPolicy("cluster.local")


@pytest.mark.parametrize(
    ("name", "route"),
    [
        ("echo.demo.svc.cluster.local", Route.CLUSTER),
        ("ECHO.Demo.SVC.Cluster.Local", Route.CLUSTER),
        ("cluster.local", Route.CLUSTER),
        ("10-244-0-5.demo.pod.cluster.local", Route.CLUSTER),
        ("example.com", Route.UPSTREAM),
        ("notcluster.local", Route.UPSTREAM),
        ("cluster.local.example.com", Route.UPSTREAM),
        ("local", Route.UPSTREAM),
    ],
)
def test_only_names_under_the_cluster_domain_go_to_the_cluster(name: str, route: Route) -> None:
    assert POLICY.route(parse_query(query_bytes(name))) == route


SHORT = DnsPolicy("cluster.local", ["demo", "shop", "com"])


@pytest.mark.parametrize(
    ("name", "looked_up"),
    [
        ("echo.demo.svc.cluster.local", "echo.demo.svc.cluster.local."),
        ("echo.demo", "echo.demo.svc.cluster.local."),
        ("Echo.Demo", "Echo.Demo.svc.cluster.local."),
        ("db-0.db.shop", "db-0.db.shop.svc.cluster.local."),  # a pod of a headless Service
        ("echo.demo.svc", "echo.demo.svc.cluster.local."),
        ("echo.other.svc", "echo.other.svc.cluster.local."),  # any namespace, with .svc
        ("demo.svc", "demo.svc.cluster.local."),
        ("echo.other", None),  # not a namespace rootd knows: the previous resolver's
        ("a.b.c.demo", None),  # too deep for a Service or a pod of one
        ("demo", None),  # a bare label: the search list's business
        ("example.com", None),  # `com` is never the cluster's, even as a namespace name
        ("shop.example.org", None),
        ("echo.shop.io", None),
    ],
)
def test_short_cluster_names_are_asked_under_the_cluster_domain(
    name: str, looked_up: str | None
) -> None:
    query = parse_query(query_bytes(name))
    assert SHORT.cluster_name(query) == looked_up
    assert SHORT.route(query) == (Route.UPSTREAM if looked_up is None else Route.CLUSTER)


def test_a_short_name_is_answered_under_the_name_asked_and_authoritatively() -> None:
    query = parse_query(query_bytes("echo.demo"))
    answer = packed_rr("echo.demo.svc.cluster.local. 5 IN A 10.96.3.4")
    other = packed_rr("elsewhere.example. 5 IN A 10.96.3.5")  # e.g. after a CNAME
    reply = dnslib.DNSRecord.parse(
        cluster_reply(query, 0, [answer, other], udp=True, looked_up="echo.demo.svc.cluster.local.")
    )
    assert [str(rr.rname) for rr in reply.rr] == ["echo.demo.", "elsewhere.example."]
    assert reply.header.aa == 1
    missing = parse_query(query_bytes("nosuch.demo"))
    nx = dnslib.DNSRecord.parse(
        cluster_reply(missing, NXDOMAIN, [], udp=True, looked_up="nosuch.demo.svc.cluster.local.")
    )
    assert (nx.header.rcode, nx.header.aa) == (NXDOMAIN, 1)


def test_policy_accepts_the_domain_with_or_without_dots_and_refuses_empty() -> None:
    assert DnsPolicy(".Cluster.Local.").cluster_domain == "cluster.local"
    with pytest.raises(ValueError, match="empty"):
        DnsPolicy(" . ")


def test_cluster_reply_keeps_the_clients_id_flags_and_question() -> None:
    query = parse_query(query_bytes("Echo.demo.svc.cluster.local", qid=777))
    answer = packed_rr("echo.demo.svc.cluster.local. 5 IN A 10.96.3.4")
    reply = dnslib.DNSRecord.parse(cluster_reply(query, 0, [answer], udp=True))
    assert reply.header.id == 777
    assert reply.header.qr == 1
    assert reply.header.rd == 1
    assert reply.header.rcode == 0
    assert str(reply.q.qname) == "Echo.demo.svc.cluster.local."  # case as asked
    assert [str(rr.rdata) for rr in reply.rr] == ["10.96.3.4"]
    assert reply.rr[0].ttl == 5


def test_cluster_reply_carries_nxdomain_and_several_records() -> None:
    query = parse_query(query_bytes("x.demo.svc.cluster.local"))
    reply = dnslib.DNSRecord.parse(cluster_reply(query, NXDOMAIN, [], udp=True))
    assert reply.header.rcode == NXDOMAIN
    assert reply.rr == []
    headless = parse_query(query_bytes("db.demo.svc.cluster.local"))
    answers = [packed_rr(f"db.demo.svc.cluster.local. 5 IN A 10.244.0.{i}") for i in (7, 8)]
    reply = dnslib.DNSRecord.parse(cluster_reply(headless, 0, answers, udp=True))
    assert sorted(str(rr.rdata) for rr in reply.rr) == ["10.244.0.7", "10.244.0.8"]


def test_a_large_udp_reply_is_truncated_but_not_over_tcp() -> None:
    query = parse_query(query_bytes("big.demo.svc.cluster.local"))
    answers = [packed_rr(f"big.demo.svc.cluster.local. 5 IN A 10.244.1.{i}") for i in range(60)]
    over_udp = cluster_reply(query, 0, answers, udp=True)
    assert len(over_udp) <= CLASSIC_UDP_LIMIT
    truncated = dnslib.DNSRecord.parse(over_udp)
    assert truncated.header.tc == 1
    assert truncated.rr == []
    assert str(truncated.q.qname) == "big.demo.svc.cluster.local."
    whole = dnslib.DNSRecord.parse(cluster_reply(query, 0, answers, udp=False))
    assert len(whole.rr) == 60
    assert whole.header.tc == 0


def test_edns_raises_the_udp_limit_and_the_reply_carries_opt() -> None:
    query = parse_query(query_bytes("big.demo.svc.cluster.local", edns=4096))
    assert query.edns
    assert query.udp_limit == 1232  # capped at what we honour
    answers = [packed_rr(f"big.demo.svc.cluster.local. 5 IN A 10.244.1.{i}") for i in range(60)]
    reply = dnslib.DNSRecord.parse(cluster_reply(query, 0, answers, udp=True))
    assert reply.header.tc == 0
    assert len(reply.rr) == 60
    assert any(rr.rtype == dnslib.QTYPE.OPT for rr in reply.ar)


def test_garbage_answers_from_the_cluster_are_refused() -> None:
    query = parse_query(query_bytes("echo.demo.svc.cluster.local"))
    with pytest.raises(BadQueryError, match="malformed answer"):
        cluster_reply(query, 0, [b"\x03abc"], udp=True)
    with pytest.raises(BadQueryError, match="out of range"):
        cluster_reply(query, 99, [], udp=True)


def test_servfail_reply() -> None:
    query = parse_query(query_bytes("example.com", qid=9))
    reply = dnslib.DNSRecord.parse(error_reply(query, SERVFAIL))
    assert (reply.header.id, reply.header.rcode, reply.header.qr) == (9, SERVFAIL, 1)
    assert str(reply.q.qname) == "example.com."


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "malformed"),
        (b"\x00" * 5, "malformed"),
        (bytes(dnslib.DNSRecord.question("a.b").reply().pack()), "a response"),
        (struct.pack("!HHHHHH", 1, 0, 0, 0, 0, 0), "0 questions"),
        (struct.pack("!HHHHHH", 1, 0x2000, 1, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01", "opcode"),
    ],
)
def test_bad_queries_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(BadQueryError, match=why):
        parse_query(data)


def test_formerr_only_when_the_header_is_readable_and_a_query() -> None:
    assert formerr_for(b"\x01\x02") is None
    response_header = struct.pack("!HHHHHH", 5, 0x8000, 0, 0, 0, 0)
    assert formerr_for(response_header) is None
    reply = formerr_for(struct.pack("!HHHHHH", 5, 0x0100, 9, 9, 9, 9) + b"junk")
    assert reply is not None
    qid, flags, *counts = struct.unpack("!HHHHHH", reply)
    assert qid == 5
    assert flags & 0x8000
    assert flags & 0xF == FORMERR
    assert flags & 0x0100  # RD echoed
    assert counts == [0, 0, 0, 0]


def test_is_reply_to_matches_id_and_qr() -> None:
    query = parse_query(query_bytes("example.com", qid=11))
    reply = dnslib.DNSRecord.parse(query.raw).reply()
    assert is_reply_to(query, bytes(reply.pack()))
    reply.header.id = 12
    assert not is_reply_to(query, bytes(reply.pack()))
    assert not is_reply_to(query, query.raw)  # the query itself is no reply
    assert not is_reply_to(query, b"\x00\x0b")


def test_tcp_framer_splits_and_joins_messages() -> None:
    framer = TcpFramer()
    stream = TcpFramer.frame(b"first") + TcpFramer.frame(b"") + TcpFramer.frame(b"second")
    assert framer.feed(stream[:3]) == []
    assert framer.pending == 3
    assert framer.feed(stream[3:10]) == [b"first", b""]
    assert framer.feed(stream[10:]) == [b"second"]
    assert framer.pending == 0
    with pytest.raises(ValueError, match="does not fit"):
        TcpFramer.frame(b"x" * 70000)


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_parsing(data: bytes) -> None:
    try:
        query = parse_query(data)
    except BadQueryError:
        assert formerr_for(data) is None or len(data) >= 12
        return
    POLICY.route(query)
    error_reply(query, SERVFAIL)


def test_truncated_reads_the_tc_bit() -> None:
    query = parse_query(query_bytes("x.example"))
    reply = dnslib.DNSRecord.parse(error_reply(query, SERVFAIL))
    assert not truncated(bytes(reply.pack()))
    reply.header.tc = 1
    assert truncated(bytes(reply.pack()))
    assert not truncated(b"\x00\x01")
