"""The agent's side of intercepts: review what the manager asks of this pod, and hand
the connections of an active intercept to the workstation through the manager.

A hand-over is a tunnel naming the intercept. The manager offers it to the client that
owns the intercept; the client answers CONNECTED (then bytes flow both ways) or
DIAL_FAILED (nothing listens on the workstation: the caller is reset at once, it does not
hang). While no intercept is active — or the manager is away — traffic goes to the app.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping, Sequence

from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from kubepresence.agent.core.routing import AgentIntercept, Routes, review
from kubepresence.protocol.agents import PortTakeover
from kubepresence.protocol.filterwire import from_message
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.httpfilter import HttpFilter
from kubepresence.protocol.tunnel import describe, relay, send_reset

log = logging.getLogger(__name__)

TUNNEL_PATH = "/kubepresence.manager.Manager/Tunnel"
HAND_OVER_TIMEOUT = 10.0
FLOW_IDLE_TIMEOUT = 600.0
CALL_TIMEOUT = 10.0
_UNKNOWN_ADDRESS = ("0.0.0.0", 0)  # noqa: S104 - an unknown peer, not a bind address


async def follow_intercepts(
    channel: Channel,
    session_id: str,
    takeovers: Sequence[PortTakeover],
    environment: Mapping[str, str],
    routes: Routes,
) -> None:
    """Watch this workload's intercepts until the stream ends; review each one once."""
    watch = manager.ManagerStub(channel)  # no deadline: the watch lives with the session
    calls = manager.ManagerStub(channel, timeout=CALL_TIMEOUT)
    reviewed: set[str] = set()
    taken: dict[str, AgentIntercept] = {}  # the intercepts this agent accepted
    session = common.SessionInfo(session_id=session_id)
    try:
        async for snapshot in watch.watch_intercepts(session):
            seen = [
                AgentIntercept(
                    id=info.id,
                    port=(info.spec or common.InterceptSpec()).service_port,
                    active=info.state == common.InterceptState.ACTIVE,
                    http_filter=filter_of(info),
                )
                for info in snapshot.intercepts
            ]
            for intercept in seen:
                if intercept.id in reviewed:
                    continue
                accepted, reason = review(takeovers, intercept, taken.values())
                if accepted:
                    taken[intercept.id] = intercept
                await calls.review_intercept(
                    manager.ReviewInterceptRequest(
                        session=session,
                        intercept_id=intercept.id,
                        disposition=manager.Disposition.ACTIVE
                        if accepted
                        else manager.Disposition.AGENT_ERROR,
                        message=reason,
                        environment=dict(environment),
                    )
                )
                reviewed.add(intercept.id)
                log.info("intercept %s %s", intercept.id, "accepted" if accepted else reason)
            routes.update(seen)
            reviewed &= {i.id for i in seen}
            taken = {k: v for k, v in taken.items() if k in reviewed}
    finally:
        routes.update([])  # without the manager's word, traffic goes to the app


NOT_HTTP = "the port carries traffic that is not HTTP: those connections go to the app"


async def report_not_http(
    channel: Channel, session_id: str, intercept_ids: Sequence[str], environment: Mapping[str, str]
) -> None:
    """Tell the owners of personal intercepts that their port also carries non-HTTP
    connections, which no filter can route (they go to the app); `list` shows it."""
    calls = manager.ManagerStub(channel, timeout=CALL_TIMEOUT)
    session = common.SessionInfo(session_id=session_id)
    for intercept_id in intercept_ids:
        try:
            await calls.review_intercept(
                manager.ReviewInterceptRequest(
                    session=session,
                    intercept_id=intercept_id,
                    disposition=manager.Disposition.ACTIVE,
                    message=NOT_HTTP,
                    environment=dict(environment),
                )
            )
        except (GRPCError, OSError, TimeoutError, StreamTerminatedError) as error:
            log.info("intercept %s: could not report non-HTTP traffic: %s", intercept_id, error)


def filter_of(info: common.InterceptInfo) -> HttpFilter | None:
    """A personal intercept's filter (the manager checked it); None for a global one."""
    return from_message((info.spec or common.InterceptSpec()).http_filter)


async def hand_over(
    channel: Channel,
    session_id: str,
    intercept_id: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    addresses: tuple[tuple[str, int], tuple[str, int]] | None = None,
) -> None:
    """Send one inbound connection to the workstation; reset it if nobody takes it.

    `addresses` (caller, local) name the connection when `reader`/`writer` are not the
    caller's own socket (a request routed by `httprouting` comes through a socket pair).
    """
    peer, local = addresses or (
        writer.get_extra_info("peername") or _UNKNOWN_ADDRESS,
        writer.get_extra_info("sockname") or _UNKNOWN_ADDRESS,
    )
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
    try:
        async with channel.request(
            TUNNEL_PATH,
            Cardinality.STREAM_STREAM,
            common.TunnelMessage,
            common.TunnelMessage,
            timeout=None,
        ) as stream:
            await stream.send_message(opening)
            async with asyncio.timeout(HAND_OVER_TIMEOUT):
                reply = await stream.recv_message()
            code = reply.control.code if reply is not None and reply.control else None
            if code != common.TunnelControlCode.CONNECTED:
                reason = reply.control.message if reply is not None and reply.control else "none"
                log.info("intercept %s: the workstation refused (%s)", intercept_id, reason)
                writer.transport.abort()
                return
            try:
                await relay(stream, reader, writer, idle_timeout=FLOW_IDLE_TIMEOUT)
            except Exception as error:  # noqa: BLE001 - this connection's end only
                await send_reset(stream, describe(error))
                writer.transport.abort()
            else:
                await stream.end()
    except (GRPCError, OSError, TimeoutError, StreamTerminatedError) as error:
        log.info("intercept %s: hand-over failed (%s)", intercept_id, describe(error))
        writer.transport.abort()
