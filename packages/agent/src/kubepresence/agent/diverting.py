"""Which connections on a takeover port leave the app's path, and where they go.

The forwarder asks for every connection it accepts (`Diverter.__call__`): while the agent
has a session with the manager, a port a global intercept holds hands the whole connection
over to the intercept's workstation; a port personal intercepts hold routes each HTTP
request by its head (see `httprouting`), to the app or to one workstation; otherwise, or
without a session, the connection stays the app's (False: the forwarder passes it on).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping

from kubepresence.agent.core.http1 import RequestHead
from kubepresence.agent.core.routing import Routes
from kubepresence.agent.handing import hand_over, report_not_http
from kubepresence.agent.net.appdialing import AppDialer
from kubepresence.agent.net.forwarding import STREAM_LIMIT
from kubepresence.agent.net.httprouting import APP, route_http
from kubepresence.agent.rpc.manager import ManagerSession
from kubepresence.protocol.agents import PortTakeover


class Diverter:
    def __init__(self, routes: Routes, app: AppDialer, environment: Mapping[str, str]) -> None:
        self.routes = routes
        self.app = app
        self.environment = environment
        self.session: ManagerSession | None = None  # the agent's, once it runs
        self._told_not_http: set[str] = set()  # intercepts told their port is not all HTTP

    async def __call__(
        self, takeover: PortTakeover, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Take the connection (True) or leave it to the app (False)."""
        session = self.session
        if session is None or session.session_id is None:
            return False
        intercept_id = self.routes.intercept_for(takeover)
        if intercept_id is not None:
            await hand_over(session.channel, session.session_id, intercept_id, reader, writer)
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
        if session is None or session.session_id is None:
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
            hand_over(
                session.channel,
                session.session_id,
                intercept_id,
                their_reader,
                their_writer,
                addresses,
            ),
            name=f"hand-over {intercept_id}",
        )
        return await asyncio.open_connection(sock=ours, limit=STREAM_LIMIT)
