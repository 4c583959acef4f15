"""Asking the cluster's DNS service, over UDP with a TCP retry for truncated answers."""

from __future__ import annotations

import asyncio
import secrets
import struct

from kubepresence.manager.core.dns import build_query, parse_response
from kubepresence.protocol.errors import ClusterError

DNS_PORT = 53
TIMEOUT = 3.0


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def resolve(server: str, name: str, qtype: int) -> tuple[int, list[bytes]]:
    """(rcode, answer records) for `name`/`qtype` from the DNS server at `server`."""
    query_id = secrets.randbelow(65536)
    query = build_query(name, qtype, query_id)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(TIMEOUT):
            transport, protocol = await loop.create_datagram_endpoint(
                _Reply, remote_addr=(server, DNS_PORT)
            )
            try:
                transport.sendto(query)
                data = await protocol.answer
            finally:
                transport.close()
            rcode, answers, truncated = parse_response(data, query_id)
            if truncated:
                rcode, answers, _ = parse_response(await _over_tcp(server, query), query_id)
    except (OSError, TimeoutError) as error:
        raise ClusterError(f"the cluster DNS at {server} did not answer: {error!r}") from error
    return rcode, answers


async def _over_tcp(server: str, query: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server, DNS_PORT)
    try:
        writer.write(struct.pack("!H", len(query)) + query)
        await writer.drain()
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(length)
    finally:
        writer.close()
