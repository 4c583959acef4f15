"""The agent's intercept and flow streams on the wire (see kubepresence.protocol.streams).

The shells (`handing`: intercepts and hand-overs; `proxying`: egress dials) work with
plain types; this module turns them into Manager calls and tunnel opens and back:
WatchIntercepts and ReviewIntercept, HandOver tunnels, WatchEgressDials and the
AnswerDial tunnels that answer its dials.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from kubepresence.agent.core.routing import AgentIntercept
from kubepresence.protocol import streams
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.httpfilter import HttpFilter
from kubepresence.protocol.tunnel import send_dial_failed
from kubepresence.protocol.wire import filter_from_message

CALL_TIMEOUT = 10.0
# What ends one call or one tunnel with the manager (not the agent).
STREAM_ERRORS = (GRPCError, OSError, TimeoutError, StreamTerminatedError)

Address = tuple[str, int]


class EgressUnsupportedError(Exception):
    """The manager posts no egress dials (an older version)."""


@dataclass(frozen=True)
class EgressOrder:
    """An egress dial: a client's flow for this agent to dial from its pod."""

    dial_id: str
    host: str
    port: int
    udp: bool
    idle_timeout: float | None  # None: the client named none
    problem: str  # non-empty: the dial names no valid destination (refuse it)
    connection: Any  # the dial's connection, echoed in the answer's open


def filter_of(info: common.InterceptInfo) -> HttpFilter | None:
    """A personal intercept's filter (the manager checked it); None for a global one."""
    return filter_from_message((info.spec or common.InterceptSpec()).http_filter)


def intercept_of(info: common.InterceptInfo) -> AgentIntercept:
    spec = info.spec or common.InterceptSpec()
    return AgentIntercept(
        id=info.id,
        port=spec.service_port,
        active=info.state == common.InterceptState.ACTIVE,
        http_filter=filter_of(info),
        client=info.client_session_id,
        workstation=(spec.local_host or "127.0.0.1", spec.local_port),
    )


async def watch_intercepts(
    channel: Channel, session_id: str
) -> AsyncIterator[list[AgentIntercept]]:
    """This workload's intercepts, now and after every change, until the stream ends."""
    watch = manager.ManagerStub(channel)  # no deadline: the watch lives with the session
    async for snapshot in watch.watch_intercepts(common.SessionInfo(session_id=session_id)):
        yield [intercept_of(info) for info in snapshot.intercepts]


async def review_intercept(
    channel: Channel,
    session_id: str,
    intercept_id: str,
    *,
    accepted: bool,
    message: str,
    environment: Mapping[str, str],
) -> None:
    """Tell the manager this pod's word on an intercept (ACTIVE or AGENT_ERROR)."""
    calls = manager.ManagerStub(channel, timeout=CALL_TIMEOUT)
    await calls.review_intercept(
        manager.ReviewInterceptRequest(
            session=common.SessionInfo(session_id=session_id),
            intercept_id=intercept_id,
            disposition=manager.Disposition.ACTIVE if accepted else manager.Disposition.AGENT_ERROR,
            message=message,
            environment=dict(environment),
        )
    )


@contextlib.asynccontextmanager
async def hand_over(
    channel: Channel, session_id: str, intercept_id: str, peer: Address, local: Address
) -> AsyncIterator[Any]:
    """A HandOver tunnel for one intercepted TCP connection (caller `peer`, `local` the
    address it reached); the open is sent. Yields the tunnel stream."""
    opening = common.TunnelMessage(
        open=common.TunnelOpen(
            session_id=session_id,
            intercept_id=intercept_id,
            connection=common.ConnectionId(
                protocol=common.Protocol.TCP,
                source_ip=ipaddress.ip_address(peer[0]).packed,
                source_port=peer[1],
                destination_ip=ipaddress.ip_address(local[0]).packed,
                destination_port=local[1],
            ),
        )
    )
    async with streams.hand_over(channel) as stream:
        await stream.send_message(opening)
        yield stream


def refusal(reply: Any) -> str | None:
    """None when a tunnel's first reply says CONNECTED; else why not."""
    code = reply.control.code if reply is not None and reply.control else None
    if code == common.TunnelControlCode.CONNECTED:
        return None
    return reply.control.message if reply is not None and reply.control else "none"


def destination_of(connection: common.ConnectionId | None) -> tuple[str, int, bool]:
    """(host, port, is UDP) of a dial; ValueError when it names no valid destination."""
    if connection is None:
        raise ValueError("the dial names no connection")
    if connection.protocol not in (common.Protocol.TCP, common.Protocol.UDP):
        raise ValueError("a flow is TCP or UDP")
    if not 0 < connection.destination_port < 65536:
        raise ValueError(f"port {connection.destination_port} is out of range")
    host = str(ipaddress.ip_address(connection.destination_ip))  # 4 or 16 bytes
    return host, connection.destination_port, connection.protocol == common.Protocol.UDP


def order_of(dial: manager.EgressDial) -> EgressOrder:
    idle = None
    if dial.idle_timeout is not None and dial.idle_timeout.total_seconds() > 0:
        idle = dial.idle_timeout.total_seconds()
    try:
        host, port, udp = destination_of(dial.connection)
        problem = ""
    except ValueError as error:
        host, port, udp, problem = "", 0, False, str(error)
    return EgressOrder(dial.dial_id, host, port, udp, idle, problem, dial.connection)


async def watch_egress_dials(
    channel: Channel, session_id: str
) -> AsyncGenerator[EgressOrder | None, None]:
    """This session's egress dials until the stream ends; None is a keep-alive.
    EgressUnsupportedError: the manager has no WatchEgressDials."""
    watch = manager.ManagerStub(channel)  # no deadline: the watch lives with the session
    session = common.SessionInfo(session_id=session_id)
    try:
        # The stub's stream is an async generator: close it when the watch ends.
        stream = cast(AsyncGenerator[manager.EgressDial, None], watch.watch_egress_dials(session))
        async with contextlib.aclosing(stream) as dials:
            async for dial in dials:
                yield order_of(dial) if dial.dial_id else None
    except GRPCError as error:
        if error.status is not Status.UNIMPLEMENTED:
            raise
        raise EgressUnsupportedError from None


@contextlib.asynccontextmanager
async def answer_dial(channel: Channel, session_id: str, order: EgressOrder) -> AsyncIterator[Any]:
    """An AnswerDial tunnel claiming `order`; the open is sent. Yields the tunnel stream."""
    answer = common.TunnelMessage(
        open=common.TunnelOpen(
            session_id=session_id, dial_id=order.dial_id, connection=order.connection
        )
    )
    async with streams.answer_dial(channel) as stream:
        await stream.send_message(answer)
        yield stream


async def refuse(stream: Any, reason: str) -> None:
    """Answer a dial DIAL_FAILED and end the tunnel."""
    await send_dial_failed(stream, reason)
    await stream.end()
