"""One SFTP session of the volume export (see `exporting`), on asyncssh's server.

`SFTPServerHandler` is asyncssh-internal, not public API: it expects an SSH channel's
reader and writer, which the small shims below stand in for, and asyncssh is pinned
exactly. Imported on the first session only, and without asyncssh's package `__init__`
(see `exporting`): the SFTP server needs ~1 MiB of it; the whole of asyncssh, with
cryptography, is ~16 MiB.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from asyncssh.logging import logger as ssh_logger
from asyncssh.sftp import SFTPServer, SFTPServerHandler

SFTP_VERSION = 3  # what sshfs speaks


class _Channel:
    """What the SFTP server and handler ask of an SSH channel."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.logger = ssh_logger.get_child("sftp-export")

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def get_environment(self) -> dict[str, str]:
        return {}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._writer.get_extra_info(name, default)


class _Reader:
    def __init__(self, reader: asyncio.StreamReader, channel: _Channel) -> None:
        self._reader = reader
        self.channel = channel
        self.logger = channel.logger

    async def readexactly(self, n: int) -> bytes:
        return await self._reader.readexactly(n)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.channel.get_extra_info(name, default)


class _Writer:
    def __init__(self, writer: asyncio.StreamWriter, channel: _Channel) -> None:
        self._writer = writer
        self.channel = channel
        self.logger = channel.logger

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def close(self) -> None:
        self._writer.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.channel.get_extra_info(name, default)


async def serve_sftp(root: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve SFTP chrooted at `root` over one connection until the client ends it."""
    channel = _Channel(writer)
    server = SFTPServer(channel, chroot=os.fsencode(root))  # type: ignore[arg-type]
    handler = SFTPServerHandler(
        server,
        _Reader(reader, channel),  # type: ignore[arg-type]
        _Writer(writer, channel),  # type: ignore[arg-type]
        SFTP_VERSION,
    )
    await handler.run()
