"""Composition root of the root daemon."""

from __future__ import annotations

from pathlib import Path

from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.transport import close_server, serve_unix
from kubepresence.rootd.rpc.daemon import DaemonService


class RootDaemon:
    def __init__(self, socket_path: Path, allowed_uid: int) -> None:
        self.socket_path = socket_path
        self.allowed_uid = allowed_uid

    async def run(self, supervisor: Supervisor) -> None:
        service = DaemonService(supervisor)
        # Only the invoking user may call; the socket belongs to them so that their
        # userd can connect, and mode 0600 keeps everyone else out at the file level too.
        server = await serve_unix(
            [service],
            self.socket_path,
            mode=0o600,
            allowed_uids={self.allowed_uid},
            owner_uid=self.allowed_uid,
        )
        try:
            await supervisor.stopping.wait()
        finally:
            await close_server(server)
            self.socket_path.unlink(missing_ok=True)
