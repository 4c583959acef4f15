"""Composition root of the traffic agent.

The agent passes every connection on its takeover ports to the app (`forwarding`) and
keeps a session with the traffic manager (`rpc.manager`). The two are independent: the
app's traffic never waits for the manager, which may come and go.

Shutdown (SIGTERM when the pod goes): depart from the manager, stop accepting, give open
connections a moment to finish, then drop them.
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

DRAIN_TIMEOUT = 3.0


class TrafficAgent:
    def __init__(self, config: AgentConfig, manager_host: str, manager_port: int) -> None:
        self.config = config
        self.manager_host = manager_host
        self.manager_port = manager_port
        self.forwarder = Forwarder(config.ports)

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
        session = ManagerSession(self.config, self.manager_host, self.manager_port)
        async with asyncio.TaskGroup() as connections:
            await self.forwarder.start(connections)
            keeping = supervisor.spawn(session.run(), name="manager-session")
            try:
                await supervisor.stopping.wait()
            finally:
                keeping.cancel()
                await session.depart()
                self.forwarder.close()
                await self._drain()

    async def _drain(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT):
                await self.forwarder.idle.wait()
        dropped = self.forwarder.abort()
        if dropped:
            log.info("dropped %d open connection(s) at shutdown", dropped)
