"""rootd's client of the traffic manager: one DialCluster tunnel per flow.

rootd's channel goes to userd's splice socket (`NetworkConfig.manager_socket`): each of its
connections is a port-forward to the manager's gRPC port that userd opened and carries
without decoding, so the flows' HTTP/2 and protobuf are parsed only here and at the
manager. The only place in rootd that speaks `TunnelMessage`: the relay sees
`TunnelEvent`s. grpclib failures of the channel itself (the socket refuses, the connection
drops) come out as `ConnectionError`, so one flow's failure is told from the channel's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import h2.exceptions
from grpclib.exceptions import GRPCError, StreamTerminatedError

from kubepresence.protocol import streams
from kubepresence.protocol.gen import common
from kubepresence.protocol.transport import unix_channel
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import PROTO_TCP
from kubepresence.rootd.core.vnat import Destination
from kubepresence.rootd.net.relaying import TunnelEvent, TunnelEventKind

log = logging.getLogger(__name__)

_CONTROL_KINDS = {
    common.TunnelControlCode.CONNECTED: TunnelEventKind.CONNECTED,
    common.TunnelControlCode.DIAL_FAILED: TunnelEventKind.DIAL_FAILED,
    common.TunnelControlCode.WRITE_CLOSED: TunnelEventKind.WRITE_CLOSED,
    common.TunnelControlCode.RESET: TunnelEventKind.RESET,
    common.TunnelControlCode.KEEP_ALIVE: TunnelEventKind.KEEP_ALIVE,
}


def connection_id(flow: FlowId, destination: Destination | None = None) -> common.ConnectionId:
    """The flow as the cluster dials it: to `destination` when it went to a virtual address."""
    return common.ConnectionId(
        protocol=common.Protocol.TCP if flow.protocol == PROTO_TCP else common.Protocol.UDP,
        source_ip=flow.source.packed,
        source_port=flow.source_port,
        destination_ip=(destination.address if destination else flow.destination).packed,
        destination_port=flow.destination_port,
    )


def tunnel_open(flow: FlowId, destination: Destination | None = None) -> common.TunnelOpen:
    opening = common.TunnelOpen(connection=connection_id(flow, destination))
    if destination is not None and destination.via:
        namespace, _, workload = destination.via.partition("/")
        opening.via_namespace = namespace
        opening.via_workload = workload
    return opening


def flow_of(connection: common.ConnectionId) -> FlowId:
    """The FlowId of a ConnectionId (tests' fake servers use it)."""
    return FlowId(
        int(connection.protocol),
        ipaddress.ip_address(connection.source_ip),
        connection.source_port,
        ipaddress.ip_address(connection.destination_ip),
        connection.destination_port,
    )


class GrpcTunnel:
    """A `Tunnel` (one flow's stream) over one Manager `DialCluster` stream."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._ended = False  # we sent END_STREAM
        self.finished = False  # the far end's trailers arrived

    async def receive(self) -> TunnelEvent:
        if self.finished:
            return TunnelEvent(TunnelEventKind.END)
        try:
            message: common.TunnelMessage | None = await self._stream.recv_message()
            if message is None:
                self.finished = True
                await self._stream.recv_trailing_metadata()
                return TunnelEvent(TunnelEventKind.END)
        except GRPCError as error:
            self.finished = True
            return TunnelEvent(TunnelEventKind.RESET, message=error.message or error.status.name)
        except StreamTerminatedError as error:
            raise ConnectionResetError(f"manager tunnel: {error}") from None
        if message.data is not None:
            return TunnelEvent(TunnelEventKind.DATA, data=message.data)
        if message.control is not None:
            kind = _CONTROL_KINDS.get(message.control.code, TunnelEventKind.KEEP_ALIVE)
            return TunnelEvent(kind, message=message.control.message)
        return TunnelEvent(TunnelEventKind.KEEP_ALIVE)

    async def _send(self, message: common.TunnelMessage) -> None:
        if self._ended or self.finished:
            return  # the stream is over on our side or theirs: nothing can go out
        try:
            await self._stream.send_message(message)
        except (StreamTerminatedError, h2.exceptions.StreamClosedError) as error:
            raise ConnectionResetError(f"manager tunnel: {error!r}") from None

    async def send_data(self, data: bytes) -> None:
        await self._send(common.TunnelMessage(data=data))

    async def send_write_closed(self) -> None:
        await self._send(_control(common.TunnelControlCode.WRITE_CLOSED))

    async def send_reset(self, reason: str) -> None:
        await self._send(_control(common.TunnelControlCode.RESET, reason))

    async def end(self) -> None:
        if self._ended or self.finished:
            return
        self._ended = True
        try:
            await self._stream.end()
        except (StreamTerminatedError, h2.exceptions.StreamClosedError) as error:
            # the manager finished (and reset) its side before our end: nothing is lost, since
            # we end only after our last data or control message went out.
            log.debug("tunnel already closed by the manager: %r", error)


def _control(code: common.TunnelControlCode, message: str = "") -> common.TunnelMessage:
    return common.TunnelMessage(control=common.TunnelControl(code=code, message=message))


class ManagerTunnels:
    """A channel to the manager through userd's splice socket; `tunnel` opens a flow's.

    `session_id` is asked for each flow: userd tells rootd a new one when it arrives again
    at a restarted manager (an egress flow names its client session)."""

    def __init__(self, socket_path: Path, session_id: Callable[[], str]) -> None:
        self.socket_path = socket_path
        self._session_id = session_id
        self._channel = unix_channel(socket_path)

    def close(self) -> None:
        self._channel.close()

    @contextlib.asynccontextmanager
    async def tunnel(
        self, flow: FlowId, destination: Destination | None = None
    ) -> AsyncIterator[GrpcTunnel]:
        """A tunnel for `flow` (dialled to `destination` when given): the open message is
        sent; the stream is cancelled on exit unless both sides finished it."""
        # A flow lives as long as it moves; the manager's idle timeout ends it.
        request = streams.dial_cluster(self._channel)
        try:
            async with request as stream:
                tunnel = GrpcTunnel(stream)
                try:
                    opening = tunnel_open(flow, destination)
                    opening.session_id = self._session_id()
                    await stream.send_message(common.TunnelMessage(open=opening))
                    yield tunnel
                finally:
                    if not tunnel.finished:
                        with contextlib.suppress(Exception):
                            await stream.cancel()
        except StreamTerminatedError as error:
            raise ConnectionResetError(f"manager tunnel: {error}") from None
        except GRPCError as error:
            # Trailers with an error after we were done: the flow is over either way.
            log.debug("%s: tunnel ended with %s", flow, error)
