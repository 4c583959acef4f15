"""Client of the traffic manager: the user daemon's calls into the cluster.

In production the channel runs over the port-forward to the manager pod; tests hand in a
channel to a unix socket. Every unary call has a deadline; a tunnel flow is a bidi stream
whose liveness the relay's idle timeout bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from grpclib.client import Channel, Stream
from grpclib.const import Cardinality

from kubepresence.protocol.errors import ClusterError
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.transport import client_errors

TUNNEL_PATH = "/kubepresence.manager.Manager/Tunnel"
CALL_TIMEOUT = 10.0
DIAL_TIMEOUT = 15.0


@dataclass(frozen=True)
class Destination:
    host: str
    port: int
    protocol: str = "tcp"


class ManagerClient:
    def __init__(self, channel: Channel, timeout: float = CALL_TIMEOUT) -> None:
        self._channel = channel
        self._stub = manager.ManagerStub(channel, timeout=timeout)

    async def version(self) -> str:
        async with client_errors("the traffic manager does not answer"):
            info = await self._stub.version(protobuf.Empty())
        return info.version

    @contextlib.asynccontextmanager
    async def dial(
        self, session_id: str, destination: Destination, idle_timeout: float
    ) -> AsyncIterator[Stream[Any, Any]]:
        """Open a flow to `destination` in the cluster; yields the connected tunnel stream.

        Raises ClusterError when the manager cannot dial it (refused, unreachable, timeout).
        """
        connection = common.ConnectionId(
            protocol=common.Protocol.TCP if destination.protocol == "tcp" else common.Protocol.UDP,
            destination_ip=ipaddress.ip_address(destination.host).packed,
            destination_port=destination.port,
        )
        opening = common.TunnelMessage(
            open=common.TunnelOpen(
                session_id=session_id,
                connection=connection,
                idle_timeout=timedelta(seconds=idle_timeout),
            )
        )
        async with (
            client_errors(f"tunnel to {destination.host}:{destination.port}"),
            self._channel.request(
                TUNNEL_PATH,
                Cardinality.STREAM_STREAM,
                common.TunnelMessage,
                common.TunnelMessage,
                timeout=None,  # a flow lives as long as it moves; the relay bounds idleness
            ) as stream,
        ):
            await stream.send_message(opening)
            reply = await _first_reply(stream)
            if reply.control is None or reply.control.code != common.TunnelControlCode.CONNECTED:
                reason = reply.control.message if reply.control is not None else "no answer"
                raise ClusterError(
                    f"cannot reach {destination.host}:{destination.port} in the cluster: {reason}"
                )
            yield stream
            # The relay has exchanged WRITE_CLOSED both ways: end our half of the stream.
            await stream.end()


async def _first_reply(stream: Stream[Any, Any]) -> common.TunnelMessage:
    async with asyncio.timeout(DIAL_TIMEOUT):
        reply: common.TunnelMessage | None = await stream.recv_message()
    if reply is None:
        raise ClusterError("the traffic manager closed the tunnel before dialling")
    return reply
