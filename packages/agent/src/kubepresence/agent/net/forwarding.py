"""Pass-through: every connection to a takeover port goes to the app's real port.

One listener per taken-over port. Each accepted connection dials the app where it
listens (loopback or the pod's IP: `appdialing`) and copies bytes both ways until both
directions have ended: an EOF from one side becomes a half-close (shutdown SHUT_WR)
towards the other, so protocols that half-close work; a reset or error on either side
aborts both. A failed dial resets the inbound connection,
which the peer sees as "connection refused"-like, as it would without the agent.

App connections may idle for as long as the app likes (HTTP keep-alive, websockets), so
there is no idle timeout; TCP keep-alive on both sockets finds dead peers instead.
Connection tasks belong to the forwarder's own task group; a failure ends one connection
only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence

from kubepresence.agent.net.appdialing import AppDialer
from kubepresence.protocol.agents import PortTakeover
from kubepresence.protocol.tunnel import describe

log = logging.getLogger(__name__)

# Gives an intercept the chance to take a connection: True when it did.
Divert = Callable[[PortTakeover, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]

DIAL_TIMEOUT = 5.0
READ_SIZE = 256 * 1024
STREAM_LIMIT = 1024 * 1024
# TCP keep-alive: a silent peer is probed after 60 s, dropped after about 90 s more.
KEEPIDLE, KEEPINTVL, KEEPCNT = 60, 15, 6


def _keepalive(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPIDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPINTVL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPCNT)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST rather than a FIN (SO_LINGER 0), as an aborted connection would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    writer.transport.abort()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    moved = 0
    while data := await reader.read(READ_SIZE):
        moved += len(data)
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    return moved


class Forwarder:
    """Listeners on the agent's ports, passing connections to the app."""

    def __init__(
        self,
        takeovers: Sequence[PortTakeover],
        host: str = "0.0.0.0",  # noqa: S104 - the pod's own interfaces
        divert: Divert | None = None,
        app: AppDialer | None = None,
    ) -> None:
        self.takeovers = list(takeovers)
        self.host = host
        self.divert = divert
        self.app = app or AppDialer()
        self.connections = 0  # open right now
        self.served = 0  # since start
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.idle = asyncio.Event()  # set while no connection is open
        self.idle.set()

    async def start(self, group: asyncio.TaskGroup) -> None:
        for takeover in self.takeovers:

            def accepted(
                reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter,
                takeover: PortTakeover = takeover,
            ) -> None:
                task = group.create_task(
                    self._serve(reader, writer, takeover), name=f"conn-{takeover.agent_port}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

            server = await asyncio.start_server(
                accepted, self.host, takeover.agent_port, limit=STREAM_LIMIT, reuse_address=True
            )
            self._servers.append(server)
            log.info(
                "port %d%s → app port %d%s",
                takeover.agent_port,
                f" ({takeover.name})" if takeover.name else "",
                takeover.app_port,
                " (redirected)" if takeover.redirected else "",
            )

    def close(self) -> None:
        """Stop accepting; open connections go on."""
        for server in self._servers:
            server.close()

    def abort(self) -> int:
        """Drop the open connections; how many there were."""
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, takeover: PortTakeover
    ) -> None:
        self.connections += 1
        self.served += 1
        self.idle.clear()
        peer = writer.get_extra_info("peername")
        try:
            if self.divert is not None and await self.divert(takeover, reader, writer):
                return  # an intercept took it
            try:
                async with asyncio.timeout(DIAL_TIMEOUT):
                    app_reader, app_writer = await self.app.open(takeover.app_port)
            except (OSError, TimeoutError) as error:
                log.info(
                    "app port %d does not answer (%s): resetting %s",
                    takeover.app_port,
                    describe(error),
                    peer,
                )
                _reset(writer)
                return
            _keepalive(writer)
            _keepalive(app_writer)
            await self._pipe(reader, writer, app_reader, app_writer)
        except Exception as error:  # noqa: BLE001 - one connection's end, never the agent's
            log.debug("connection from %s ended: %s", peer, describe(error))
        finally:
            self.connections -= 1
            if not self.connections:
                self.idle.set()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        app_reader: asyncio.StreamReader,
        app_writer: asyncio.StreamWriter,
    ) -> None:
        try:
            async with asyncio.TaskGroup() as pipe:
                pipe.create_task(_copy(reader, app_writer), name="to-app")
                pipe.create_task(_copy(app_reader, writer), name="from-app")
        except* (OSError, asyncio.IncompleteReadError):
            # One side broke: abort both so the other side sees it too.
            _reset(writer)
            _reset(app_writer)
            raise
        finally:
            writer.close()
            app_writer.close()
