"""Composition root of the traffic manager."""

from __future__ import annotations

from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.transport import close_server, serve_tcp


class TrafficManager:
    def __init__(self, host: str, port: int, *, dial_timeout: float, idle_timeout: float) -> None:
        self.host = host
        self.port = port
        self.dial_timeout = dial_timeout
        self.idle_timeout = idle_timeout

    async def run(self, supervisor: Supervisor) -> None:
        service = ManagerService(dial_timeout=self.dial_timeout, idle_timeout=self.idle_timeout)
        server = await serve_tcp([service], self.host, self.port)
        try:
            await supervisor.stopping.wait()
        finally:
            await close_server(server)
