"""Port-forward to a pod through the API server, over WebSocket.

kubernetes-asyncio opens the authenticated WebSocket (`connect_get_namespaced_pod_portforward`);
the framing is `core.portforward`. One WebSocket carries one connection to one pod port.
`serve_local` bridges every connection accepted on a local socket to a fresh WebSocket,
which is how a grpclib channel reaches the traffic manager's pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

from kubepresence.protocol.errors import ClusterError
from kubepresence.userd.core.portforward import (
    Data,
    PortError,
    PortForwardFraming,
    PortForwardProtocolError,
)

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 15.0
READ_SIZE = 256 * 1024


class PortForwardStream:
    """One open port-forward connection: bytes in, bytes out."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, framing: PortForwardFraming) -> None:
        self._ws = ws
        self._framing = framing
        self._pending: list[bytes] = []

    async def send(self, data: bytes) -> None:
        await self._ws.send_bytes(self._framing.data_message(data))

    async def receive(self) -> bytes | None:
        """The next bytes from the pod, or None when the connection ended."""
        while not self._pending:
            message = await self._ws.receive()
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                return None
            if message.type == aiohttp.WSMsgType.ERROR:
                raise ClusterError(f"port-forward failed: {self._ws.exception()}")
            if message.type != aiohttp.WSMsgType.BINARY:
                continue
            for event in self._framing.receive(message.data):
                if isinstance(event, PortError):
                    raise ClusterError(
                        f"port-forward to port {self._framing.port}: {event.message}"
                    )
                if isinstance(event, Data) and event.payload:
                    self._pending.append(event.payload)
        return self._pending.pop(0)

    async def wait_ready(self) -> None:
        """Wait until the API server announced both channels (the pod side is there)."""
        while not self._framing.ready:
            message = await self._ws.receive()
            if message.type != aiohttp.WSMsgType.BINARY:
                raise ClusterError(f"port-forward closed before it opened ({message.type.name})")
            for event in self._framing.receive(message.data):
                if isinstance(event, PortError):
                    raise ClusterError(f"port-forward: {event.message}")
                if isinstance(event, Data) and event.payload:
                    self._pending.append(event.payload)


class PortForwarder:
    """Opens port-forward connections to one port of one pod."""

    def __init__(self, api: WsApiClient, namespace: str, pod: str, port: int) -> None:
        self._core = client.CoreV1Api(api_client=api)
        self.namespace = namespace
        self.pod = pod
        self.port = port

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[PortForwardStream]:
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                opening: Any = await self._core.connect_get_namespaced_pod_portforward(
                    self.pod, self.namespace, ports=self.port, _preload_content=False
                )
                ws = await opening.__aenter__()
                stream = PortForwardStream(ws, PortForwardFraming(self.port))
                await stream.wait_ready()
        except aiohttp.WSServerHandshakeError as error:
            raise ClusterError(
                f"port-forward to {self.namespace}/{self.pod}:{self.port} refused: "
                f"{error.status} {error.message}"
            ) from error
        except (aiohttp.ClientError, PortForwardProtocolError, TimeoutError) as error:
            raise ClusterError(
                f"port-forward to {self.namespace}/{self.pod}:{self.port} failed: {error}"
            ) from error
        try:
            yield stream
        finally:
            await opening.__aexit__(None, None, None)

    async def bridge(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one local connection to and from a new port-forward until either ends."""
        try:
            async with self.open() as stream, asyncio.TaskGroup() as group:
                to_pod = group.create_task(_local_to_pod(reader, stream), name="to-pod")
                from_pod = group.create_task(_pod_to_local(stream, writer), name="from-pod")
                await asyncio.wait({to_pod, from_pod}, return_when=asyncio.FIRST_COMPLETED)
                # No half-close in v4: whichever side ends first ends the connection.
                for task in (to_pod, from_pod):
                    task.cancel()
        except* ClusterError as errors:
            log.warning("%s", errors.exceptions[0])
        finally:
            writer.close()

    async def serve_local(self, path: Path) -> asyncio.Server:
        """Accept local connections on a unix socket, each bridged to the pod port."""

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.bridge(reader, writer)

        server = await asyncio.start_unix_server(accepted, path=str(path))
        path.chmod(0o600)  # noqa: ASYNC240 - once, before the path is handed out
        return server


async def _local_to_pod(reader: asyncio.StreamReader, stream: PortForwardStream) -> None:
    while data := await reader.read(READ_SIZE):
        await stream.send(data)


async def _pod_to_local(stream: PortForwardStream, writer: asyncio.StreamWriter) -> None:
    while (data := await stream.receive()) is not None:
        writer.write(data)
        await writer.drain()
