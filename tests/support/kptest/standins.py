"""Stand-ins the component tests share for what the cluster provides.

- `SocketOpener`/`SocketStream`: a port-forward opener whose "port-forwards" are
  connections to a unix socket (the e2e tests open real ones through the API server);
  optionally slow to send, or refusing to open.
- `local_echo`: the workstation's local server of an intercept, answering
  "workstation:" + what it got.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from kubepresence.protocol.errors import ClusterError


class SocketStream:
    """A port-forward stand-in: bytes to and from a unix socket; optionally slow to send."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, send_delay: float
    ) -> None:
        self.reader, self.writer, self.send_delay = reader, writer, send_delay
        self.sent: list[int] = []

    def new_message(self) -> bytearray:
        return bytearray()

    async def send_message(self, message: bytearray) -> None:
        self.sent.append(len(message))
        if self.send_delay:
            await asyncio.sleep(self.send_delay)
        self.writer.write(message)
        await self.writer.drain()

    async def receive(self) -> bytes | None:
        return await self.reader.read(256 * 1024) or None


class SocketOpener:
    def __init__(self, path: Path, send_delay: float = 0.0) -> None:
        self.path, self.send_delay = path, send_delay
        self.streams: list[SocketStream] = []
        self.refuse = ""  # when set: opening fails with this

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[SocketStream]:
        if self.refuse:
            raise ClusterError(self.refuse)
        reader, writer = await asyncio.open_unix_connection(str(self.path))
        stream = SocketStream(reader, writer, self.send_delay)
        self.streams.append(stream)
        try:
            yield stream
        finally:
            writer.close()


async def local_echo() -> tuple[asyncio.Server, int]:
    """A local server on 127.0.0.1 answering "workstation:" + each chunk; (server, port)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(b"workstation:" + data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]
