"""The agent's side of intercepts: review what the manager asks of this pod, and hand
the connections of an active intercept to the workstation.

A hand-over goes straight to the client that owns the intercept when that client watches
its dials at this agent (it port-forwards to the pod: see `direct`); otherwise it is a
HandOver tunnel naming the intercept, which the manager offers to the client. Either
way the client answers CONNECTED (then bytes flow both ways) or DIAL_FAILED (nothing
listens on the workstation: the caller is reset at once, it does not hang). While no
intercept is active — or the manager is away — traffic goes to the app. The wire side is
`rpc.flows` (through the manager) and `rpc.direct` (straight).

Diverting: which connections on a takeover port leave the app's path, and where they go.
The forwarder asks for every connection it accepts (`Diverter.__call__`): while the agent
has a session with the manager, a port a global intercept holds hands the whole connection
over to the intercept's workstation; a port personal intercepts hold routes each HTTP
request by its head (see `httprouting`), to the app or to one workstation; otherwise, or
without a session, the connection stays the app's (False: the forwarder passes it on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from grpclib.client import Channel

from kubepresence.agent.core.http1 import RequestHead
from kubepresence.agent.core.routing import AgentIntercept, Routes, review
from kubepresence.agent.direct import DirectDesk, NoAnswerError
from kubepresence.agent.net.appdialing import AppDialer
from kubepresence.agent.net.forwarding import STREAM_LIMIT
from kubepresence.agent.net.httprouting import APP, route_http
from kubepresence.agent.rpc import flows
from kubepresence.agent.rpc.manager import ManagerSession
from kubepresence.protocol.agents import PortTakeover
from kubepresence.protocol.tunnel import describe, relay, send_reset

log = logging.getLogger(__name__)

HAND_OVER_TIMEOUT = 10.0
FLOW_IDLE_TIMEOUT = 600.0
_UNKNOWN_ADDRESS = ("0.0.0.0", 0)  # noqa: S104 - an unknown peer, not a bind address


async def follow_intercepts(
    channel: Channel,
    session_id: str,
    takeovers: Sequence[PortTakeover],
    environment: Mapping[str, str],
    routes: Routes,
) -> None:
    """Watch this workload's intercepts until the stream ends; review each one once."""
    reviewed: set[str] = set()
    taken: dict[str, AgentIntercept] = {}  # the intercepts this agent accepted
    try:
        async for seen in flows.watch_intercepts(channel, session_id):
            for intercept in seen:
                if intercept.id in reviewed:
                    continue
                accepted, reason = review(takeovers, intercept, taken.values())
                if accepted:
                    taken[intercept.id] = intercept
                await flows.review_intercept(
                    channel,
                    session_id,
                    intercept.id,
                    accepted=accepted,
                    message=reason,
                    environment=environment,
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
    for intercept_id in intercept_ids:
        try:
            await flows.review_intercept(
                channel,
                session_id,
                intercept_id,
                accepted=True,
                message=NOT_HTTP,
                environment=environment,
            )
        except flows.STREAM_ERRORS as error:
            log.info("intercept %s: could not report non-HTTP traffic: %s", intercept_id, error)


class HandOvers:
    """Where an intercepted connection goes: straight to a client that watches here, else
    through the manager."""

    def __init__(self, session: ManagerSession, routes: Routes, desk: DirectDesk) -> None:
        self.session = session
        self.routes = routes
        self.desk = desk

    def route(
        self, intercept_id: str, peer: tuple[str, int], local: tuple[str, int]
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        intercept = self.routes.intercept(intercept_id)
        if intercept is not None and self.desk.watching(intercept.client):
            return self.desk.hand_over(
                intercept.client, intercept_id, peer, local, intercept.workstation
            )
        session_id = self.session.session_id
        if session_id is None:
            raise ConnectionRefusedError("no session with the traffic manager")
        return flows.hand_over(self.session.channel, session_id, intercept_id, peer, local)


async def hand_over(
    hand_overs: HandOvers,
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
    try:
        async with hand_overs.route(intercept_id, peer, local) as stream:
            async with asyncio.timeout(HAND_OVER_TIMEOUT):
                reply = await stream.recv_message()
            reason = flows.refusal(reply)
            if reason is not None:
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
    except (*flows.STREAM_ERRORS, NoAnswerError) as error:
        log.info("intercept %s: hand-over failed (%s)", intercept_id, describe(error))
        writer.transport.abort()


# -- diverting: which accepted connections leave the app's path ---------------------------


class Diverter:
    def __init__(
        self,
        session: ManagerSession,
        routes: Routes,
        app: AppDialer,
        environment: Mapping[str, str],
        desk: DirectDesk,
    ) -> None:
        self.session = session
        self.routes = routes
        self.hand_overs = HandOvers(session, routes, desk)
        self.app = app
        self.environment = environment
        self._told_not_http: set[str] = set()  # intercepts told their port is not all HTTP

    async def __call__(
        self, takeover: PortTakeover, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Take the connection (True) or leave it to the app (False)."""
        session = self.session
        if session.session_id is None:  # not arrived yet, or lost the manager
            return False
        intercept_id = self.routes.intercept_for(takeover)
        if intercept_id is not None:
            await hand_over(self.hand_overs, intercept_id, reader, writer)
            return True
        if self.routes.personal_for(takeover) is None:
            return False
        # Personal intercepts: route each request by its head (see httprouting).
        addresses = (
            writer.get_extra_info("peername") or ("0.0.0.0", 0),  # noqa: S104 - unknown peer
            writer.get_extra_info("sockname") or ("0.0.0.0", 0),  # noqa: S104
        )

        def choose(head: RequestHead) -> str:
            picked = self.routes.choose(takeover, head.method, head.target, head.headers)
            return APP if picked is None else picked

        async with asyncio.TaskGroup() as hand_overs:

            async def open_upstream(
                destination: str,
            ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                if destination == APP:  # route_http bounds the dial
                    return await self.app.open(takeover.app_port)
                return await self._workstation_upstream(destination, addresses, hand_overs)

            def not_http() -> None:
                personal = self.routes.personal_for(takeover)
                unreported = [
                    intercept_id
                    for intercept_id, _ in (personal.intercepts if personal else ())
                    if intercept_id not in self._told_not_http
                ]
                if unreported and session.session_id is not None:
                    self._told_not_http.update(unreported)
                    hand_overs.create_task(
                        report_not_http(
                            session.channel,
                            session.session_id,
                            unreported,
                            self.environment,
                        ),
                        name="report non-HTTP",
                    )

            await route_http(
                reader,
                writer,
                choose=choose,
                open_upstream=open_upstream,
                on_not_http=not_http,
            )
        return True

    async def _workstation_upstream(
        self,
        intercept_id: str,
        addresses: tuple[tuple[str, int], tuple[str, int]],
        group: asyncio.TaskGroup,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the intercept's workstation: one end of a socket pair whose
        other end is handed over through the manager like a whole connection would be."""
        session = self.session
        if session.session_id is None:
            raise ConnectionRefusedError("no session with the traffic manager")
        ours, theirs = socket.socketpair()
        try:
            their_reader, their_writer = await asyncio.open_connection(
                sock=theirs, limit=STREAM_LIMIT
            )
        except BaseException:
            ours.close()
            theirs.close()
            raise
        group.create_task(
            hand_over(self.hand_overs, intercept_id, their_reader, their_writer, addresses),
            name=f"hand-over {intercept_id}",
        )
        return await asyncio.open_connection(sock=ours, limit=STREAM_LIMIT)
