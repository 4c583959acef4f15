"""Composition root of the user daemon: builds the services and owns the task group."""

from __future__ import annotations

import logging
from pathlib import Path

from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.transport import close_server, serve_unix
from kubepresence.userd.core.session import SessionState
from kubepresence.userd.rpc.connector import ConnectorService

log = logging.getLogger(__name__)


class UserDaemon:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.state = SessionState()

    async def run(self, supervisor: Supervisor) -> None:
        service = ConnectorService(self.state, supervisor)
        server = await serve_unix([service], self.socket_path, mode=0o600)
        try:
            await supervisor.stopping.wait()
        finally:
            await close_server(server)
            self.socket_path.unlink(missing_ok=True)
