"""DNS questions asked on a client's behalf: query building and reply parsing."""

from __future__ import annotations

import dnslib
import pytest

from kubepresence.manager.core.dns import BadQuestionError, build_query, parse_response


def test_query_carries_the_question() -> None:
    query = dnslib.DNSRecord.parse(build_query("echo.shop.svc.cluster.local", 1, 4242))
    assert query.header.id == 4242
    assert query.header.rd == 1
    assert str(query.q.qname) == "echo.shop.svc.cluster.local."
    assert query.q.qtype == dnslib.QTYPE.A


@pytest.mark.parametrize(("name", "qtype"), [("", 1), ("a..b", 1), ("x" * 254, 1), ("ok", 0)])
def test_bad_questions(name: str, qtype: int) -> None:
    with pytest.raises(BadQuestionError):
        build_query(name, qtype, 1)


def test_reply_answers_are_packed_alone() -> None:
    query = dnslib.DNSRecord.parse(build_query("echo.shop.svc.cluster.local", 1, 7))
    reply = query.reply()
    reply.add_answer(dnslib.RR("echo.shop.svc.cluster.local.", rdata=dnslib.A("10.96.0.20"), ttl=5))
    reply.add_answer(dnslib.RR("echo.shop.svc.cluster.local.", rdata=dnslib.A("10.96.0.21"), ttl=5))
    rcode, answers, truncated = parse_response(reply.pack(), 7)
    assert (rcode, truncated) == (0, False)
    parsed = [dnslib.RR.parse(dnslib.DNSBuffer(a)) for a in answers]
    assert [str(rr.rdata) for rr in parsed] == ["10.96.0.20", "10.96.0.21"]
    assert all(str(rr.rname) == "echo.shop.svc.cluster.local." for rr in parsed)


def test_nxdomain_and_mismatched_ids() -> None:
    query = dnslib.DNSRecord.parse(build_query("nope.svc.cluster.local", 1, 9))
    reply = query.reply()
    reply.header.rcode = dnslib.RCODE.NXDOMAIN
    assert parse_response(reply.pack(), 9) == (3, [], False)
    with pytest.raises(BadQuestionError, match="another query"):
        parse_response(reply.pack(), 10)
    with pytest.raises(BadQuestionError, match="malformed"):
        parse_response(b"\x00\x01", 9)
