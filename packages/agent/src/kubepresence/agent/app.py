"""Composition root of the traffic agent.

Port takeover and the manager session come with the cluster-side issue; until then the
agent runs its lifecycle (logs, signals, bounded shutdown) and passes nothing.
"""

from __future__ import annotations

import logging

from kubepresence.protocol.lifecycle import Supervisor

log = logging.getLogger(__name__)


class TrafficAgent:
    def __init__(self, manager_address: str) -> None:
        self.manager_address = manager_address

    async def run(self, supervisor: Supervisor) -> None:
        log.info("agent for manager %s: interception is not built yet", self.manager_address)
        await supervisor.stopping.wait()
