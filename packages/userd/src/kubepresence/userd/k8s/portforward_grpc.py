"""A grpclib channel whose connections are port-forwards to the traffic manager's pod.

grpclib's HTTP/2 protocol object only needs an asyncio transport: `PortForwardTransport`
is one, over an open port-forward WebSocket. So the channel speaks HTTP/2 straight into
the WebSocket instead of through a local socket bridged to it, which saved every byte of
the tunnel two system calls, two copies and a trip through the event loop in userd.

Every new gRPC connection opens a fresh port-forward to whichever pod the forwarder
names then (the manager's pod can be replaced while a session lives). The connections'
tasks belong to `run`'s task group: cancelling `run` ends them all.

The pod: `find_manager_pod` names a Ready traffic manager pod (by its label); userd asks
it again for every port-forward the channel opens.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.protocol import H2Protocol
from kubernetes_asyncio import client

from kubepresence.protocol.errors import ClusterError
from kubepresence.protocol.transport import CODEC
from kubepresence.userd.k8s.errors import api_errors
from kubepresence.userd.k8s.portforward_spdy import SpdyStream, SpdyTransport

log = logging.getLogger(__name__)

# Past this much unsent data the protocol is told to pause; it resumes below LOW_WATER.
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
# A WebSocket message carries at most this much: the sender copies each message a few
# times (framing, masking), so bigger ones only raise the memory peak.
MESSAGE_SIZE = 256 * 1024


class ByteStream(Protocol):
    """An open connection to the pod port (`PortForwardStream`)."""

    def new_message(self) -> bytearray: ...
    async def send_message(self, message: bytearray) -> None: ...
    async def receive(self) -> bytes | memoryview | None: ...


class StreamOpener(Protocol):
    """Opens connections to the pod port (`PortForwarder`)."""

    def open(self) -> AbstractAsyncContextManager[ByteStream]: ...


class PortForwardTransport(asyncio.Transport):
    """An asyncio transport over one port-forward stream.

    Writes made in one turn of the event loop leave together, in WebSocket messages of up
    to `MESSAGE_SIZE`; what the pod sends is fed to the protocol as it arrives. `pump`
    moves the bytes until either side ends or `close` is called, then tells the protocol
    the connection is lost.
    """

    def __init__(self, stream: ByteStream, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._stream = stream
        self._protocol = protocol
        self._unsent: collections.deque[bytes | memoryview] = collections.deque()
        self._unsent_size = 0
        self._unsent_ready = asyncio.Event()
        self._writing_paused = False
        self._reading_allowed = asyncio.Event()
        self._reading_allowed.set()
        self._closing = False

    # asyncio.Transport, as grpclib's protocol uses it
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        # grpclib hands over bytes it never touches again; copy anything mutable.
        self._unsent.append(data if isinstance(data, bytes) else bytes(data))
        self._unsent_size += len(data)
        self._unsent_ready.set()
        if not self._writing_paused and self._unsent_size > HIGH_WATER:
            self._writing_paused = True
            self._protocol.pause_writing()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
        self._unsent_ready.set()  # the sender flushes what is left, then ends

    def abort(self) -> None:
        self._unsent.clear()
        self._unsent_size = 0
        self.close()

    def can_write_eof(self) -> bool:
        return False  # no half-close in the port-forward protocol

    def get_write_buffer_size(self) -> int:
        return self._unsent_size

    def pause_reading(self) -> None:
        self._reading_allowed.clear()

    def resume_reading(self) -> None:
        self._reading_allowed.set()

    def is_reading(self) -> bool:
        return self._reading_allowed.is_set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default  # no socket, no peer address of our own

    # moving the bytes
    async def pump(self) -> None:
        """Carry bytes both ways until either side ends or `close`; then connection_lost."""
        error: Exception | None = None
        try:
            async with asyncio.TaskGroup() as group:
                directions = {
                    group.create_task(self._send_loop(), name="to-manager"),
                    group.create_task(self._receive_loop(), name="from-manager"),
                }
                await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
                for task in directions:
                    task.cancel()
        except* (ClusterError, OSError) as errors:
            error = errors.exceptions[0]
            log.warning("port-forward to the traffic manager failed: %s", error)
        finally:
            self._closing = True
            self._protocol.connection_lost(error)

    async def _send_loop(self) -> None:
        while True:
            await self._unsent_ready.wait()
            if not self._unsent:  # closed, and everything written before has left
                return
            await self._stream.send_message(self._next_message())
            if self._writing_paused and self._unsent_size < LOW_WATER:
                self._writing_paused = False
                self._protocol.resume_writing()

    def _next_message(self) -> bytearray:
        """Up to MESSAGE_SIZE of the unsent bytes, copied once into a data message."""
        message = self._stream.new_message()
        room = MESSAGE_SIZE
        while self._unsent and room:
            chunk = self._unsent.popleft()
            if len(chunk) > room:
                self._unsent.appendleft(memoryview(chunk)[room:])
                chunk = memoryview(chunk)[:room]
            message += chunk
            room -= len(chunk)
        self._unsent_size -= MESSAGE_SIZE - room
        if not self._unsent and not self._closing:
            self._unsent_ready.clear()
        return message

    async def _receive_loop(self) -> None:
        while (data := await self._stream.receive()) is not None:
            await self._reading_allowed.wait()
            self._protocol.data_received(data)  # type: ignore[arg-type] # h2 takes any buffer


def transport_for(
    stream: ByteStream, protocol: asyncio.Protocol
) -> PortForwardTransport | SpdyTransport:
    """The cheapest transport the stream allows: straight over SPDY, else through tasks."""
    if isinstance(stream, SpdyStream):
        return SpdyTransport(stream, protocol)
    return PortForwardTransport(stream, protocol)


class PortForwardChannel(Channel):
    """A grpclib channel to the forwarder's pod port; `run` must be running to connect."""

    def __init__(self, forwarder: StreamOpener, config: Configuration) -> None:
        super().__init__(codec=CODEC, config=config)
        self._forwarder = forwarder
        self._group: asyncio.TaskGroup | None = None

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Own the connections' tasks until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            if ready is not None:
                ready.set()
            try:
                await asyncio.get_running_loop().create_future()
            finally:
                self._group = None

    async def _create_connection(self) -> H2Protocol:
        if self._group is None:
            raise ClusterError("the port-forward to the traffic manager is not running")
        opened: asyncio.Future[H2Protocol] = asyncio.get_running_loop().create_future()
        self._group.create_task(self._connection(opened), name="manager-connection")
        return await opened

    async def _connection(self, opened: asyncio.Future[H2Protocol]) -> None:
        try:
            async with self._forwarder.open() as stream:
                protocol = self._protocol_factory()
                transport = transport_for(stream, protocol)
                protocol.connection_made(transport)
                if opened.cancelled():  # nobody waits for this connection any more
                    transport.close()
                else:
                    opened.set_result(protocol)
                await transport.pump()
        except ClusterError as error:
            if not opened.done():
                opened.set_exception(error)
            else:
                log.warning("connection to the traffic manager ended: %s", error)


MANAGER_SELECTOR = "app.kubernetes.io/name=kubepresence-manager"


def _ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def find_manager_pod(api: client.ApiClient, namespace: str) -> str:
    """The name of a Ready traffic manager pod; ClusterError when there is none."""
    with api_errors(f"cannot list the traffic manager's pods in {namespace}"):
        pods = await client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector=MANAGER_SELECTOR
        )
    ready = sorted((p for p in pods.items if _ready(p)), key=lambda p: p.metadata.name)
    if not ready:
        raise ClusterError(f"no Ready traffic manager pod in namespace {namespace}")
    return str(ready[0].metadata.name)
