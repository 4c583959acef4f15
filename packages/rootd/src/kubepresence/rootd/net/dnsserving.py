"""Answering DNS on the VIF: the asyncio shell around `core.dns`.

UDP queries arrive as datagrams of the DNS address's flows, TCP queries as terminated
streams (both through the relay). Cluster names are looked up through userd, one lookup
per distinct question at a time: a burst of clients asking the same name (a thousand
connections to one Service start with a thousand identical A and AAAA questions) waits
for one answer instead of queueing a thousand round trips to the cluster. Answers are
then kept for their TTL (`core.dnscache`). Every other
question is sent unchanged over UDP to the resolvers of the original resolv.conf, one after
the other, each with a bounded wait; no answer from any of them is SERVFAIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from kubepresence.rootd.core.dns import (
    SERVFAIL,
    AddressTranslation,
    BadQueryError,
    DnsPolicy,
    Query,
    TcpFramer,
    cluster_reply,
    error_reply,
    formerr_for,
    is_reply_to,
    mapped_reply,
    parse_query,
    truncated,
)
from kubepresence.rootd.core.dnscache import DnsCache
from kubepresence.rootd.net.streams import StreamResetError, TcpStream

log = logging.getLogger(__name__)

Lookup = Callable[[str, int], Awaitable[tuple[int, list[bytes]]]]

LOOKUP_TIMEOUT = 4.0  # a cluster lookup through userd and the manager
UPSTREAM_TIMEOUT = 2.0  # each previous resolver
TCP_IDLE_TIMEOUT = 30.0  # a DNS-over-TCP client that sends nothing more
MAX_TCP_PENDING = 65537


@dataclass(slots=True)
class DnsCounters:
    cluster: int = 0
    upstream: int = 0
    failed: int = 0
    malformed: int = 0
    shared: int = 0  # cluster questions answered by a lookup already under way
    kept: int = 0  # cluster questions answered from the cache
    mapped: int = 0  # names answered from the --dns-map table


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self, query: Query, reply: asyncio.Future[bytes]) -> None:
        self._query = query
        self._reply = reply

    def datagram_received(self, data: bytes, addr: object) -> None:
        if is_reply_to(self._query, data) and not self._reply.done():
            self._reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self._reply.done():  # e.g. ICMP port unreachable: nobody listens there
            self._reply.set_exception(exc)


class DnsService:
    """Answers the queries sent to the cluster DNS address."""

    def __init__(
        self,
        policy: DnsPolicy,
        lookup: Lookup,
        upstreams: Sequence[str],
        *,
        upstream_port: int = 53,
        lookup_timeout: float = LOOKUP_TIMEOUT,
        upstream_timeout: float = UPSTREAM_TIMEOUT,
        clock: Callable[[], float] | None = None,
        translate: AddressTranslation | None = None,
    ) -> None:
        self.policy = policy
        self._translate = translate
        self._lookup = lookup
        self.upstreams = list(upstreams)
        self._upstream_port = upstream_port
        self._lookup_timeout = lookup_timeout
        self._upstream_timeout = upstream_timeout
        self.counters = DnsCounters()
        self.cache = DnsCache()
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        # (name, qtype) → the lookup under way; later askers share it.
        self._in_flight: dict[tuple[str, int], asyncio.Future[tuple[int, list[bytes]]]] = {}

    async def answer(self, data: bytes, *, udp: bool) -> bytes | None:
        """The reply to one query (None: drop it, it was not a query at all)."""
        try:
            query = parse_query(data)
        except BadQueryError as error:
            self.counters.malformed += 1
            log.debug("bad DNS query: %s", error)
            return formerr_for(data)
        target = self.policy.mapped(query)
        if target is not None:
            self.counters.mapped += 1
            reply = mapped_reply(query, target, udp=udp)
            if reply is not None:
                return reply
            # Mapped to another name: the cluster's answer for it, under the asked name.
            looked_up = self.policy.cluster_name_of(target) or target.rstrip(".") + "."
            return await self._from_cluster(query, looked_up, udp)
        cluster_name = self.policy.cluster_name(query)
        if cluster_name is not None:
            self.counters.cluster += 1
            return await self._from_cluster(query, cluster_name, udp)
        self.counters.upstream += 1
        reply = await self._forward(query, udp)
        if reply is None:
            self.counters.failed += 1
            return error_reply(query, SERVFAIL)
        return reply

    async def _from_cluster(self, query: Query, name: str, udp: bool) -> bytes:
        kept = self.cache.get(name, query.qtype, self._clock())
        try:
            if kept is not None:
                self.counters.kept += 1
                rcode, answers, age = kept
                return cluster_reply(
                    query,
                    rcode,
                    answers,
                    udp=udp,
                    age=age,
                    looked_up=name,
                    translate=self._translate,
                )
            rcode, answers = await self._shared_lookup(name, query.qtype)
            return cluster_reply(
                query, rcode, answers, udp=udp, looked_up=name, translate=self._translate
            )
        except (TimeoutError, ConnectionError, OSError, LookupError, BadQueryError) as error:
            self.counters.failed += 1
            log.info("cluster lookup of %s failed: %s", query, error or type(error).__name__)
            return error_reply(query, SERVFAIL)

    async def _shared_lookup(self, name: str, qtype: int) -> tuple[int, list[bytes]]:
        """Look the question up, or wait for the lookup of it already under way.

        The first asker does the work in its own task and publishes the outcome; should it
        be cancelled, the others get a ConnectionError (SERVFAIL: the client asks again).
        """
        key = (name.lower(), qtype)
        shared = self._in_flight.get(key)
        if shared is not None:
            self.counters.shared += 1
            return await asyncio.shield(shared)
        outcome: asyncio.Future[tuple[int, list[bytes]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._in_flight[key] = outcome
        try:
            async with asyncio.timeout(self._lookup_timeout):
                result = await self._lookup(name, qtype)
        except BaseException as error:
            failure = (
                error
                if isinstance(error, Exception)
                else ConnectionError("the lookup was abandoned")
            )
            outcome.set_exception(failure)
            outcome.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            self.cache.put(name, qtype, *result, self._clock())
            outcome.set_result(result)
            return result
        finally:
            del self._in_flight[key]

    async def _forward(self, query: Query, udp: bool) -> bytes | None:
        for server in self.upstreams:
            reply = await self._ask_udp(server, query)
            if reply is not None and not udp and truncated(reply):
                # The client asked over TCP for the whole answer: ask the same way.
                reply = await self._ask_tcp(server, query) or reply
            if reply is not None:
                return reply
        return None

    async def _ask_tcp(self, server: str, query: Query) -> bytes | None:
        try:
            async with asyncio.timeout(self._upstream_timeout):
                reader, writer = await asyncio.open_connection(server, self._upstream_port)
                try:
                    writer.write(TcpFramer.frame(query.raw))
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    reply = await reader.readexactly(length)
                finally:
                    writer.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
            log.info("previous resolver %s gave no TCP answer for %s: %r", server, query, error)
            return None
        return reply if is_reply_to(query, reply) else None

    async def _ask_udp(self, server: str, query: Query) -> bytes | None:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes] = loop.create_future()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _OneReply(query, reply), remote_addr=(server, self._upstream_port)
            )
        except OSError as error:
            log.info("previous resolver %s unreachable: %s", server, error)
            return None
        try:
            transport.sendto(query.raw)
            async with asyncio.timeout(self._upstream_timeout):
                return await reply
        except (TimeoutError, OSError) as error:
            log.info("previous resolver %s gave no answer for %s: %r", server, query, error)
            return None
        finally:
            transport.close()

    async def serve_tcp(self, stream: TcpStream) -> None:
        """DNS over TCP: length-prefixed queries, answered in order, until the client closes."""
        framer = TcpFramer()
        try:
            while True:
                try:
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                        data = await stream.read(1 << 16)
                except TimeoutError:
                    break
                if not data:
                    break
                for message in framer.feed(data):
                    reply = await self.answer(message, udp=False)
                    if reply is not None:
                        await stream.write(TcpFramer.frame(reply))
                if framer.pending > MAX_TCP_PENDING:
                    stream.abort()
                    return
            stream.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await stream.wait_closed()
        except (StreamResetError, BrokenPipeError):
            return
