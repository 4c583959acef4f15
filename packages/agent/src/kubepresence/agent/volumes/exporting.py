"""Exporting the app's volumes to the workstation: raw SFTP on a TCP port, no SSH.

The webhook mounts the app container's volumes into the agent under one root
(`/kubepresence/app-mounts/<original mountPath>`, read-only ones read-only). The agent
serves that root over SFTP on the port the webhook chose (8022 unless the pod
declares it); the workstation mounts it with
`sshfs -o directport=PORT POD_IP:/ MOUNTPOINT` through the cluster network kubepresence
gives it. With `directport` sshfs speaks SFTP straight over the TCP connection: no SSH
transport, no keys, nothing to prompt for.

The SFTP server is asyncssh's `SFTPServer` with `chroot` (paths cannot escape the root),
driven over the connection's stream reader and writer (`sftpsession`, imported with
asyncssh when the first session arrives).

Who reaches the pod IP reaches the app's volumes, as the app does (Telepresence's agent
exports them the same way): the pod network is the boundary. File operations block the
event loop briefly (asyncssh's server does plain file I/O); sshfs keeps requests small.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kubepresence.agent.core.config import AgentConfig
from kubepresence.protocol.lazyimport import without_package_init
from kubepresence.protocol.tunnel import describe

log = logging.getLogger(__name__)

SftpSession = Callable[[str, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _load_sftp_session() -> SftpSession:
    # asyncssh only once mounted, and only its SFTP server: ~1 MiB instead of ~16 MiB.
    with without_package_init("asyncssh"):
        from kubepresence.agent.volumes.sftpsession import serve_sftp

    return serve_sftp


class VolumeExport:
    """The SFTP export of the app's volumes; `start` listens, `close` stops listening.

    Disabled (nothing listens) without a root: the app has no volumes.
    Session tasks belong to the task group handed to `start`; a failure ends one session.
    """

    def __init__(self, root: str, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - the pod's own interfaces
        self.root = root
        self.port = port
        self.host = host
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def of(cls, config: AgentConfig) -> VolumeExport:
        # sftp_port 0 from the webhook: the app has no volumes, nothing to export.
        return cls(config.app_mounts_root if config.sftp_port else "", config.sftp_port)

    async def start(self, group: asyncio.TaskGroup) -> bool:
        """Listen (port 0: any; the chosen one lands in `port`); False when disabled or
        the port is taken (logged: the workstation's mount then fails, intercepts work)."""
        if not self.root:
            return False

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = group.create_task(self._serve(reader, writer), name="sftp-session")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            self._server = await asyncio.start_server(
                accepted, self.host, self.port, reuse_address=True
            )
        except OSError as error:
            log.warning("cannot export the volumes on port %d: %s", self.port, describe(error))
            return False
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("exporting %s over SFTP on port %d", self.root, self.port)
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        log.info("volume export: session from %s", peer)
        try:
            serve_sftp = await asyncio.to_thread(_load_sftp_session)  # off the loop: ~0.2 s
            await serve_sftp(self.root, reader, writer)
        except Exception as error:  # noqa: BLE001 - one session's end, never the agent's
            log.info("volume export: session from %s failed: %s", peer, describe(error))
        finally:
            writer.close()
            log.info("volume export: session from %s ended", peer)

    def close(self) -> None:
        """Stop accepting and end the open sessions (asyncssh closes their files)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
