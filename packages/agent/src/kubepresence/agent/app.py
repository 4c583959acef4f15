"""Composition root of the traffic agent.

The agent passes every connection on its takeover ports to the app (`forwarding`) and
keeps a session with the traffic manager (`rpc.manager`). The two are independent: the
app's traffic never waits for the manager, which may come and go.

Shutdown (SIGTERM when the pod goes): depart from the manager; keep accepting for a
moment (the pod leaves its Services' endpoints at the same time, not before: connections
still arrive, and the app, told to stop too, may still serve them); stop accepting; give
open connections a moment to finish; drop the rest. All within the supervisor's grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kubepresence.agent.core.config import AgentConfig
from kubepresence.agent.forwarding import Forwarder
from kubepresence.agent.rpc.manager import ManagerSession
from kubepresence.protocol.lifecycle import Supervisor

log = logging.getLogger(__name__)

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
        self.forwarder = Forwarder(config.ports, host=listen_host)
        self.session: ManagerSession | None = None

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
        async with asyncio.TaskGroup() as connections:
            await self.forwarder.start(connections)
            keeping = supervisor.spawn(session.run(), name="manager-session")
            try:
                await supervisor.stopping.wait()
            finally:
                keeping.cancel()
                await session.depart()
                await asyncio.sleep(LINGER)
                self.forwarder.close()
                await self._drain()

    async def _drain(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await self.forwarder.idle.wait()
        dropped = self.forwarder.abort()
        if dropped:
            log.info("dropped %d open connection(s) at shutdown", dropped)
