"""Cluster DNS answers kept for their time to live. Sans-IO: the caller passes the clock.

A client resolves a Service name for every new connection (glibc keeps nothing), and each
cluster lookup is a round trip through userd, the API server and the manager. Answers are
kept as the cluster gave them, for the smallest TTL of their records, at most `MAX_TTL`.
CoreDNS gives cluster records the `ttl` of its kubernetes plugin (30 s in kubeadm's
Corefile and in the project's cluster) and its own cache counts it down, so a record
leaves both caches when CoreDNS's copy expires: a pod in the cluster sees the same.
A name that does not exist (NXDOMAIN) or has no record of the asked type is kept only
`NEGATIVE_TTL`, so that a Service created right after a failed lookup is found soon.
Replies built from a kept answer count its age off the TTLs (`age`). Failures are not
kept.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import dnslib

from kubepresence.rootd.core.dns import NOERROR, NXDOMAIN

MAX_TTL = 30.0
NEGATIVE_TTL = 5.0
MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class Kept:
    rcode: int
    answers: tuple[bytes, ...]
    stored: float
    expires: float


def record_ttl(packed: bytes) -> int | None:
    """The TTL of one packed answer record, or None when it does not parse."""
    try:
        return int(dnslib.RR.parse(dnslib.DNSBuffer(packed)).ttl)
    except (dnslib.DNSError, ValueError, IndexError, struct.error):
        return None


class DnsCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._kept: dict[tuple[str, int], Kept] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, name: str, qtype: int, now: float) -> tuple[int, list[bytes], int] | None:
        """(rcode, answers, whole seconds since they were looked up), or None."""
        key = (name.lower(), qtype)
        kept = self._kept.get(key)
        if kept is None:
            return None
        if now >= kept.expires:
            del self._kept[key]
            return None
        return kept.rcode, list(kept.answers), int(now - kept.stored)

    def put(self, name: str, qtype: int, rcode: int, answers: Sequence[bytes], now: float) -> None:
        ttl = self._ttl(rcode, answers)
        if ttl <= 0:
            return
        key = (name.lower(), qtype)
        self._kept.pop(key, None)
        if len(self._kept) >= self._max_entries:
            self._make_room(now)
        self._kept[key] = Kept(rcode, tuple(answers), now, now + ttl)

    @staticmethod
    def _ttl(rcode: int, answers: Sequence[bytes]) -> float:
        if rcode == NXDOMAIN or (rcode == NOERROR and not answers):
            return NEGATIVE_TTL
        if rcode != NOERROR:
            return 0.0
        ttls = [record_ttl(packed) for packed in answers]
        if any(ttl is None for ttl in ttls):
            return 0.0  # a record we cannot read: let the reply builder say so each time
        return min(MAX_TTL, *(float(ttl) for ttl in ttls if ttl is not None))

    def _make_room(self, now: float) -> None:
        for key in [key for key, kept in self._kept.items() if now >= kept.expires]:
            del self._kept[key]
        while len(self._kept) >= self._max_entries:
            del self._kept[next(iter(self._kept))]  # the oldest stored
