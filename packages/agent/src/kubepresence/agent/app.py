"""Composition root of the traffic agent.

The agent passes every connection on its takeover ports to the app (`forwarding`) and
keeps a session with the traffic manager (`rpc.manager`); while it has one, `diverting`
takes intercepted connections to the workstation. The two are independent: the
app's traffic never waits for the manager, which may come and go. While it has a session
it also dials the client flows the manager sends out through its pod (`proxying`).

Shutdown (SIGTERM when the pod goes): depart from the manager; keep accepting for a
moment (the pod leaves its Services' endpoints at the same time, not before: connections
still arrive, and the app, told to stop too, may still serve them); stop accepting; give
open connections a moment to finish; drop the rest. All within the supervisor's grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Server

from kubepresence.agent.core.config import AgentConfig
from kubepresence.agent.core.routing import Routes
from kubepresence.agent.direct import DirectDesk
from kubepresence.agent.handing import Diverter, follow_intercepts
from kubepresence.agent.net.appdialing import AppDialer
from kubepresence.agent.net.forwarding import Forwarder
from kubepresence.agent.proxying import EgressDialer
from kubepresence.agent.rpc.direct import serve_direct
from kubepresence.agent.rpc.manager import ManagerSession, follow_log_level
from kubepresence.agent.volumes.exporting import VolumeExport
from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.transport import close_server
from kubepresence.protocol.tunnel import describe

log = logging.getLogger(__name__)

FOLLOW_RETRY = 1.0
LINGER = 1.0  # keep accepting after the stop signal
DRAIN_TIMEOUT = 1.5  # then let open connections finish


class TrafficAgent:
    def __init__(
        self,
        config: AgentConfig,
        manager_host: str,
        manager_port: int,
        listen_host: str = "0.0.0.0",  # noqa: S104 - the pod's own interfaces
    ) -> None:
        self.config = config
        self.manager_host = manager_host
        self.manager_port = manager_port
        self.listen_host = listen_host
        self.routes = Routes()  # what the manager's intercepts ask of each takeover port
        # Made in `run`, with what needs it: its grpclib channel binds to the running loop.
        self.session: ManagerSession | None = None
        self.export = VolumeExport.of(config)  # the app's volumes, for `intercept --mount`
        self.egress = EgressDialer()  # client flows that leave the cluster from this pod
        self.direct = DirectDesk()  # clients that port-forward here take their connections

    async def run(self, supervisor: Supervisor) -> None:
        log.info(
            "agent of %s/%s (%s %s, container %s), manager %s:%d",
            self.config.namespace,
            self.config.pod_name,
            self.config.workload_kind or "pod",
            self.config.workload_name,
            self.config.container,
            self.manager_host,
            self.manager_port,
        )
        session = self.session = ManagerSession(self.config, self.manager_host, self.manager_port)
        app = AppDialer(self.config.pod_ip)
        # Which accepted connections go to a workstation instead of the app.
        diverter = Diverter(session, self.routes, app, self.config.environment, self.direct)
        forwarder = Forwarder(self.config.ports, host=self.listen_host, divert=diverter, app=app)
        async with asyncio.TaskGroup() as connections:
            await forwarder.start(connections)
            await self.export.start(connections)
            self.egress.start(connections)
            health = await self._open_health_port()
            direct = await self._serve_direct()
            keeping = supervisor.spawn(session.run(), name="manager-session")
            following = supervisor.spawn(self._follow(session), name="intercept-watch")
            try:
                await supervisor.stopping.wait()
            finally:
                following.cancel()
                keeping.cancel()
                await session.depart()
                await asyncio.sleep(LINGER)
                forwarder.close()
                self.export.close()
                if health is not None:
                    health.close()
                if direct is not None:
                    await close_server(direct, grace=0.5)
                await self._drain(forwarder)

    async def _open_health_port(self) -> asyncio.Server | None:
        """Listen on the readiness probe's port once the takeover ports listen: a probe
        connection is closed at once (never one more connection to intercept)."""
        if not self.config.health_port:
            return None

        def close_at_once(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        try:
            return await asyncio.start_server(
                close_at_once, self.listen_host, self.config.health_port, reuse_address=True
            )
        except OSError as error:  # something undeclared listens there: its answer will do
            log.warning(
                "cannot open the health port %d: %s", self.config.health_port, describe(error)
            )
            return None

    async def _serve_direct(self) -> Server | None:
        """The Agent service on the pod's loopback, when the manager gave it a port."""
        if not self.config.direct_port:
            return None
        try:
            return await serve_direct(self.direct, self.config.direct_port)
        except OSError as error:  # hand-overs still go through the manager
            log.warning(
                "cannot serve direct hand-overs on port %d: %s",
                self.config.direct_port,
                describe(error),
            )
            return None

    async def _follow(self, session: ManagerSession) -> None:
        """Follow this workload's intercepts whenever the agent has a session."""
        while True:
            await session.arrived.wait()
            session_id = session.session_id
            if session_id is None:
                await asyncio.sleep(FOLLOW_RETRY)
                continue
            try:
                # A watch of a session the agent no longer has is stale: a restarted manager
                # may never end it, and the new session's intercepts would go unseen.
                async with asyncio.TaskGroup() as watch:
                    following = watch.create_task(
                        follow_intercepts(
                            session.channel,
                            session_id,
                            self.config.ports,
                            self.config.environment,
                            self.routes,
                        ),
                        name="intercept-watch",
                    )
                    replaced = watch.create_task(session.replaced(session_id), name="replaced")
                    leveling = watch.create_task(
                        follow_log_level(session.channel, session_id), name="log-level-watch"
                    )
                    egress = watch.create_task(
                        self.egress.follow(session.channel, session_id), name="egress-watch"
                    )
                    await asyncio.wait(
                        {following, replaced, egress}, return_when=asyncio.FIRST_COMPLETED
                    )
                    following.cancel()
                    replaced.cancel()
                    leveling.cancel()
                    egress.cancel()
            except* (GRPCError, OSError, TimeoutError, StreamTerminatedError) as failed:
                log.info("intercept watch interrupted: %s", describe(failed.exceptions[0]))
            await asyncio.sleep(FOLLOW_RETRY)

    async def _drain(self, forwarder: Forwarder) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await forwarder.idle.wait()
        dropped = forwarder.abort() + self.egress.abort()
        if dropped:
            log.info("dropped %d open connection(s) at shutdown", dropped)
