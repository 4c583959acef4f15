"""The agent's Agent service (see `direct`): it translates, the desk decides.

Served on the pod's loopback only: a client reaches it through a port-forward, which the
API server allows only to those who may port-forward to the pod.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpclib.const
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from kubepresence.agent.direct import DirectDesk, PostedDial, UnknownDialError
from kubepresence.protocol import streams
from kubepresence.protocol.gen import agent, common
from kubepresence.protocol.transport import serve_tcp

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def dial_request(posted: PostedDial) -> common.DialRequest:
    return common.DialRequest(
        dial_id=posted.dial_id,
        intercept_id=posted.intercept_id,
        connection=common.ConnectionId(
            protocol=common.Protocol.TCP,
            source_ip=ipaddress.ip_address(posted.peer[0]).packed,
            source_port=posted.peer[1],
            destination_ip=ipaddress.ip_address(posted.local[0]).packed,
            destination_port=posted.local[1],
        ),
        local_host=posted.local_host,
        local_port=posted.local_port,
    )


class AgentService(agent.AgentBase):
    def __init__(self, desk: DirectDesk) -> None:
        self._desk = desk

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()
        # A tunnel needs both directions at once: served on the raw stream.
        mapping[streams.AGENT_ANSWER_DIAL_PATH] = streams.tunnel_handler(self._answer_dial)
        return mapping

    async def watch_dials(self, message: common.SessionInfo) -> AsyncIterator[common.DialRequest]:
        if not message.session_id:
            raise GRPCError(Status.INVALID_ARGUMENT, "a watch names the client's session")
        async for posted in self._desk.watch(message.session_id):
            yield common.DialRequest() if posted is None else dial_request(posted)

    async def _answer_dial(self, stream: Stream[Any, Any]) -> None:
        first: common.TunnelMessage | None = await stream.recv_message()
        if first is None or first.open is None or not first.open.dial_id:
            raise GRPCError(Status.INVALID_ARGUMENT, "an AnswerDial opens naming its dial")
        try:
            await self._desk.answered(first.open.dial_id, stream)
        except UnknownDialError as error:
            raise GRPCError(Status.NOT_FOUND, str(error)) from None


async def serve_direct(desk: DirectDesk, port: int) -> Server:
    """The Agent service on the pod's loopback `port`."""
    return await serve_tcp([AgentService(desk)], LOOPBACK, port)
