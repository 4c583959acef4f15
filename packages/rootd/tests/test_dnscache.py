"""core.dnscache: what is kept, for how long, and what goes when it is full.

Scenarios:
- an answer is kept for the smallest TTL of its records, at most MAX_TTL, under a
  case-insensitive name, and reports its age in whole seconds;
- NXDOMAIN and an empty NOERROR are kept for NEGATIVE_TTL; SERVFAIL, a TTL of 0 and
  records that do not parse are not kept;
- a full cache drops expired entries first, then the oldest.
"""

from __future__ import annotations

import dnslib
import pytest

from kubepresence.rootd.core.dns import NOERROR, NXDOMAIN, SERVFAIL
from kubepresence.rootd.core.dnscache import MAX_TTL, NEGATIVE_TTL, DnsCache, record_ttl

A, AAAA = 1, 28


def packed(zone: str) -> bytes:
    buffer = dnslib.DNSBuffer()
    dnslib.RR.fromZone(zone)[0].pack(buffer)
    return bytes(buffer.data)


def test_kept_for_the_smallest_ttl() -> None:
    cache = DnsCache()
    answers = [packed("web.ns.svc.cluster.local. 9 IN A 10.96.0.9"), packed("web. 4 IN A 10.0.0.4")]
    cache.put("Web.ns.svc.cluster.local.", A, NOERROR, answers, now=100.0)
    assert cache.get("web.NS.svc.cluster.local.", A, now=103.9) == (NOERROR, answers, 3)
    assert cache.get("web.ns.svc.cluster.local.", AAAA, now=101.0) is None  # another type
    assert cache.get("web.ns.svc.cluster.local.", A, now=104.0) is None
    assert len(cache) == 0  # the expired entry went when it was asked for


def test_long_ttls_are_capped() -> None:
    cache = DnsCache()
    cache.put("a.", A, NOERROR, [packed("a. 86400 IN A 10.0.0.1")], now=0.0)
    assert cache.get("a.", A, now=MAX_TTL - 0.1) is not None
    assert cache.get("a.", A, now=MAX_TTL) is None


@pytest.mark.parametrize("rcode", [NXDOMAIN, NOERROR])
def test_no_answer_is_kept_for_the_negative_ttl(rcode: int) -> None:
    cache = DnsCache()
    cache.put("gone.", A, rcode, [], now=0.0)
    assert cache.get("gone.", A, now=NEGATIVE_TTL - 0.1) == (rcode, [], 4)
    assert cache.get("gone.", A, now=NEGATIVE_TTL) is None


@pytest.mark.parametrize(
    ("rcode", "answers"),
    [
        (SERVFAIL, []),
        (NOERROR, [packed("a. 0 IN A 10.0.0.1")]),
        (NOERROR, [b"\x00\x01garbage"]),
    ],
)
def test_what_is_not_kept(rcode: int, answers: list[bytes]) -> None:
    cache = DnsCache()
    cache.put("a.", A, rcode, answers, now=0.0)
    assert cache.get("a.", A, now=0.0) is None


def test_record_ttl() -> None:
    assert record_ttl(packed("a. 17 IN A 10.0.0.1")) == 17
    assert record_ttl(b"\x03") is None


def test_a_full_cache_drops_the_expired_then_the_oldest() -> None:
    cache = DnsCache(max_entries=3)
    short = [packed("s. 1 IN A 10.0.0.1")]
    long = [packed("l. 20 IN A 10.0.0.2")]
    cache.put("expiring.", A, NOERROR, short, now=0.0)
    cache.put("old.", A, NOERROR, long, now=0.0)
    cache.put("newer.", A, NOERROR, long, now=0.5)
    cache.put("newest.", A, NOERROR, long, now=2.0)  # full: the expired one goes
    assert [cache.get(n, A, now=2.0) is not None for n in ("old.", "newer.", "newest.")] == [
        True,
        True,
        True,
    ]
    cache.put("latest.", A, NOERROR, long, now=3.0)  # full, nothing expired: the oldest goes
    assert cache.get("old.", A, now=3.0) is None
    assert len(cache) == 3
    # Storing a name again replaces it and makes it the newest.
    cache.put("newer.", A, NOERROR, long, now=4.0)
    cache.put("fifth.", A, NOERROR, long, now=4.0)
    assert cache.get("newest.", A, now=4.0) is None
    assert cache.get("newer.", A, now=4.0) is not None
