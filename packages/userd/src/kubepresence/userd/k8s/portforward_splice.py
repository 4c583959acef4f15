"""A unix socket whose every connection is spliced to a fresh port-forward to the manager.

rootd runs its own gRPC channel to the traffic manager over this socket: userd opens the
port-forward (it holds the credentials; rootd never reads the kubeconfig) and moves the
bytes both ways without decoding HTTP/2 or protobuf. Before, userd parsed every message
of every flow and framed it again: most of its CPU per byte moved.

The splice is two protocols, each writing what it receives into the other's transport,
with no task or queue in between; a full side pauses reading on the other, so the
socket's flow control reaches the far end as is. A connection ends both ways when either
side ends: rootd's channel then opens a new connection, which is a new port-forward to
whichever manager pod is Ready then.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import cast

from kubepresence.protocol.errors import ClusterError
from kubepresence.userd.k8s.portforward_grpc import StreamOpener, transport_for

log = logging.getLogger(__name__)


class _Side(asyncio.Protocol):
    """One end of a splice: what arrives here leaves through `peer`, the other end's
    transport; when this end's transport is full, the other end stops reading."""

    def __init__(self, *, held: bool = False, closed: asyncio.Event | None = None) -> None:
        """`held`: read nothing until the other end exists (`let_go`); `closed`: set when
        the splices stop, after which a connection made is closed at once."""
        self.transport: asyncio.Transport | None = None
        self.peer: asyncio.Transport | None = None
        self.made = asyncio.Event()
        self.lost = asyncio.Event()
        self._held = held
        self._closed = closed
        # What arrived before the other end existed (uvloop may deliver data before the
        # pause in connection_made takes effect): sent on as soon as it does.
        self._early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self._closed is not None and self._closed.is_set():
            self.transport.abort()
        elif self._held:
            self.transport.pause_reading()
        self.made.set()

    def let_go(self, peer: asyncio.Transport) -> None:
        """Splice to `peer`: from now on what arrives leaves through it."""
        assert self.transport is not None
        self.peer = peer
        early, self._early = self._early, []
        for data in early:
            peer.write(data)
        if self._held:
            self._held = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self._early.append(bytes(data))
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self.peer.write(data)

    def eof_received(self) -> bool:
        return False  # a half-close cannot cross the port-forward: close both ways

    def pause_writing(self) -> None:
        if self.peer is not None and not self.peer.is_closing():
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.peer.is_closing():
            self.peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()
        if self.peer is not None and not self.peer.is_closing():
            self.peer.close()


class ManagerSplices:
    """Serve `socket_path` while `run` runs: each connection gets its own port-forward."""

    def __init__(self, forwarder: StreamOpener, socket_path: Path) -> None:
        self._forwarder = forwarder
        self.socket_path = socket_path
        self.connections = 0  # spliced so far (a new one per reconnect of rootd's channel)
        self._open: set[_Side] = set()  # accepted, not yet ended

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled; the socket is removed and every splice ends on exit."""
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()
        async with asyncio.TaskGroup() as group:

            def accepted() -> _Side:
                local = _Side(held=True, closed=closed)
                self._open.add(local)
                group.create_task(self._splice(local), name="manager-splice")
                return local

            self.socket_path.unlink(missing_ok=True)
            old_umask = os.umask(0o177)  # the socket is the user's alone (rootd is root)
            try:
                server = await loop.create_unix_server(accepted, str(self.socket_path))
            finally:
                os.umask(old_umask)
            try:
                log.info("splicing %s to the traffic manager", self.socket_path)
                if ready is not None:
                    ready.set()
                await loop.create_future()
            finally:
                server.close()  # the splices are cancelled with the group
                self.socket_path.unlink(missing_ok=True)
                # A splice cancelled before it began closes nothing itself.
                closed.set()
                for side in self._open:
                    if side.transport is not None and not side.transport.is_closing():
                        side.transport.abort()

    async def _splice(self, local: _Side) -> None:
        await local.made.wait()  # connection_made runs right after the factory returns
        assert local.transport is not None
        if local.transport.is_closing():
            self._open.discard(local)
            return
        self.connections += 1
        try:
            async with self._forwarder.open() as stream:
                remote = _Side()
                transport = transport_for(stream, remote)
                remote.connection_made(transport)
                if local.lost.is_set():
                    transport.close()
                    return
                remote.peer = local.transport
                local.let_go(transport)
                await transport.pump()
        except ClusterError as error:
            log.warning("cannot splice a connection to the traffic manager: %s", error)
        finally:
            self._open.discard(local)
            if not local.transport.is_closing():
                local.transport.abort()
