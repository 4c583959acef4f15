"""Port-forward to a pod through the API server, over SPDY/3.1 or WebSocket.

SPDY (`portforward_spdy`) is what kubectl speaks and what the container runtime serves
cheapest; WebSocket (`v4.channel.k8s.io`, framing in `core.portforward_websocket`) is opened by
kubernetes-asyncio (`connect_get_namespaced_pod_portforward`) and passes proxies that only
allow WebSocket upgrades. `auto` tries SPDY and, if it cannot be used here, WebSocket,
which it then keeps. One connection carries one connection to one pod port;
`portforward_grpc` runs the gRPC channel to the traffic manager over such connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

from kubepresence.protocol.errors import ClusterError, ConfigError
from kubepresence.userd.core.portforward_spdy import SpdyProtocolError, UpgradeRefused
from kubepresence.userd.core.portforward_websocket import (
    Data,
    PortError,
    PortForwardFraming,
    PortForwardProtocolError,
)
from kubepresence.userd.k8s import credentials
from kubepresence.userd.k8s.portforward_spdy import SpdyStream, SpdyUnavailable, open_spdy

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 15.0
PROTOCOLS = ("auto", "spdy", "websocket")
PROTOCOL_VARIABLE = "KUBEPRESENCE_PORT_FORWARD"


def port_forward_protocol(environment: Mapping[str, str]) -> str:
    """The port-forward protocol the caller's environment asks for (default auto)."""
    chosen = environment.get(PROTOCOL_VARIABLE, "").strip().lower() or "auto"
    if chosen not in PROTOCOLS:
        raise ConfigError(
            f"{PROTOCOL_VARIABLE} must be one of {', '.join(PROTOCOLS)}, not {chosen!r}"
        )
    return chosen


class PortForwardStream:
    """One open port-forward connection: bytes in, bytes out."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, framing: PortForwardFraming) -> None:
        self._ws = ws
        self._framing = framing
        self._pending: list[memoryview] = []

    async def send(self, data: bytes) -> None:
        await self.send_message(self._framing.data_message(data))

    def new_message(self) -> bytearray:
        """An empty data message: append the payload, then `send_message` it."""
        return self._framing.new_data_message()

    async def send_message(self, message: bytes | bytearray) -> None:
        try:
            await self._ws.send_bytes(message)  # type: ignore[arg-type] # any bytes-like
        except (aiohttp.ClientError, ConnectionError) as error:
            # The server closes the WebSocket right after an error message: read it.
            reason = await self._closing_reason()
            raise ClusterError(
                f"port-forward to port {self._framing.port} closed: {reason or error}"
            ) from error

    async def _closing_reason(self) -> str:
        try:
            async with asyncio.timeout(1.0):
                while (message := await self._ws.receive()).type == aiohttp.WSMsgType.BINARY:
                    for event in self._framing.receive(message.data):
                        if isinstance(event, PortError):
                            return event.message
        except (TimeoutError, aiohttp.ClientError, PortForwardProtocolError):
            pass
        return ""

    async def receive(self) -> memoryview | None:
        """The next bytes from the pod (a view, no copy), or None when the connection ended."""
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


PodFinder = Callable[[], Awaitable[str]]


class PortForwarder:
    """Opens port-forward connections to one port of a pod.

    `pod` is a name, or an async function that names the pod to use for each new
    connection (the traffic manager's pod can be replaced while a session lives).
    """

    def __init__(
        self,
        api: WsApiClient,
        namespace: str,
        pod: str | PodFinder,
        port: int,
        protocol: str = "auto",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"port-forward protocol {protocol!r}")
        self._core = client.CoreV1Api(api_client=api)
        self._configuration = api.configuration
        self.protocol = protocol  # what the next open speaks; auto becomes what worked
        self.namespace = namespace
        self._pod = pod
        self.port = port
        self.pod = pod if isinstance(pod, str) else ""

    async def _pod_name(self) -> str:
        if isinstance(self._pod, str):
            return self._pod
        self.pod = await self._pod()
        return self.pod

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[PortForwardStream | SpdyStream]:
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                pod = await self._pod_name()
                spdy = await self._open_spdy(pod) if self.protocol != "websocket" else None
        except TimeoutError as error:
            raise self._failed(error) from error
        if spdy is not None:
            try:
                yield spdy
            finally:
                spdy.close()
            return
        async with self._open_websocket(pod) as stream:
            if self.protocol == "auto":
                self.protocol = "websocket"
            yield stream

    async def _open_spdy(self, pod: str) -> SpdyStream | None:
        """A SPDY stream; None if SPDY cannot be used here and `auto` may fall back."""
        try:
            try:
                stream = await open_spdy(self._configuration, self.namespace, pod, self.port)
            except UpgradeRefused as error:
                # A refreshable credential the server refused: once more with a new one.
                if error.status != 401 or not credentials.invalidate(self._configuration):
                    raise
                stream = await open_spdy(self._configuration, self.namespace, pod, self.port)
        except (SpdyUnavailable, UpgradeRefused) as error:
            if self.protocol == "spdy":
                if isinstance(error, UpgradeRefused):
                    raise ClusterError(f"{self._target} refused: {error}") from error
                raise ClusterError(f"{self._target} cannot use SPDY: {error}") from error
            log.info("port-forward over SPDY not possible (%s): trying WebSocket", error)
            return None
        except (OSError, SpdyProtocolError) as error:
            raise self._failed(error) from error
        if self.protocol == "auto":
            self.protocol = "spdy"
        return stream

    @property
    def _target(self) -> str:
        return f"port-forward to {self.namespace}/{self.pod}:{self.port}"

    def _failed(self, error: Exception) -> ClusterError:
        return ClusterError(f"{self._target} failed: {error or 'timed out'}")

    @contextlib.asynccontextmanager
    async def _open_websocket(self, pod: str) -> AsyncIterator[PortForwardStream]:
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                for attempt in (1, 2):
                    opening: Any = await self._core.connect_get_namespaced_pod_portforward(
                        pod, self.namespace, ports=self.port, _preload_content=False
                    )
                    try:
                        ws = await opening.__aenter__()
                        break
                    except aiohttp.WSServerHandshakeError as error:
                        # A refreshable credential the server refused: once more, anew.
                        if attempt == 2 or error.status != 401:
                            raise
                        if not credentials.invalidate(self._configuration):
                            raise
                stream = PortForwardStream(ws, PortForwardFraming(self.port))
                await stream.wait_ready()
        except aiohttp.WSServerHandshakeError as error:
            raise ClusterError(f"{self._target} refused: {error.status} {error.message}") from error
        except (aiohttp.ClientError, PortForwardProtocolError, TimeoutError) as error:
            raise self._failed(error) from error
        try:
            yield stream
        finally:
            await opening.__aexit__(None, None, None)
