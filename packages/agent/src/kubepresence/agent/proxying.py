"""Proxying client flows out of the pod: the agent's side of `--proxy-via CIDR=WORKLOAD`.

A client may ask that its flows to some destinations leave the cluster from a pod of a
named workload (to get that pod's address, network policies and egress). The manager
picks one of the workload's agents and posts an EgressDial on its WatchEgressDials
stream. For each dial the agent opens a Tunnel naming it (dial_id), which the manager
splices with the client's tunnel, then dials the destination from inside the pod and
answers CONNECTED or DIAL_FAILED on it, as the manager's own dial would. Then bytes flow
as they do from the manager's own dials (`kubepresence.protocol.dialing`, shared with
the manager: the tunnel relay for TCP, the datagram relay for UDP). One task per flow, in
the agent's connection task group.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncGenerator
from typing import Any, cast

from grpclib.client import Channel, Stream
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from kubepresence.protocol import dialing
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.tunnel import control, describe

log = logging.getLogger(__name__)

TUNNEL_PATH = "/kubepresence.manager.Manager/Tunnel"
DIAL_TIMEOUT = 5.0  # the manager's dial timeout bounds only the claim: this bounds the dial
DEFAULT_IDLE_TIMEOUT = 600.0  # when the client named none
WATCH_INACTIVITY = 45.0  # three of the manager's keep-alives missed


def destination_of(connection: common.ConnectionId | None) -> tuple[str, int, bool]:
    """(host, port, is UDP) of a dial; ValueError when it names no valid destination."""
    if connection is None:
        raise ValueError("the dial names no connection")
    if connection.protocol not in (common.Protocol.TCP, common.Protocol.UDP):
        raise ValueError("a flow is TCP or UDP")
    if not 0 < connection.destination_port < 65536:
        raise ValueError(f"port {connection.destination_port} is out of range")
    host = str(ipaddress.ip_address(connection.destination_ip))  # 4 or 16 bytes
    return host, connection.destination_port, connection.protocol == common.Protocol.UDP


class EgressDialer:
    """Dials the client flows the manager posts to this agent, one task each."""

    def __init__(self) -> None:
        self.dialled = 0  # destinations this agent connected to (since start)
        self.refused = 0  # dials that failed
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, group: asyncio.TaskGroup) -> None:
        """Flows from now on are tasks of `group` (the agent's connection group)."""
        self._group = group

    @property
    def open_flows(self) -> int:
        return sum(1 for task in self._tasks if not task.done())

    def abort(self) -> int:
        """Drop the open flows; how many there were."""
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def follow(self, channel: Channel, session_id: str) -> None:
        """Take this session's egress dials until the stream ends (then return: the
        caller watches again); TimeoutError when it falls silent. A manager without
        egress dials: wait, quietly."""
        if self._group is None:
            raise RuntimeError("EgressDialer.start first")
        watch = manager.ManagerStub(channel)  # no deadline: the watch lives with the session
        session = common.SessionInfo(session_id=session_id)
        try:
            # The stub's stream is an async generator: close it when the watch ends.
            stream = cast(
                AsyncGenerator[manager.EgressDial, None], watch.watch_egress_dials(session)
            )
            async with contextlib.aclosing(stream) as dials:
                while True:
                    # The manager sends a keep-alive every 15 s: silence means a dead stream.
                    async with asyncio.timeout(WATCH_INACTIVITY):
                        dial = await anext(dials, None)
                    if dial is None:
                        return
                    if not dial.dial_id:
                        continue  # keep-alive
                    task = self._group.create_task(
                        self.flow(channel, session_id, dial), name=f"egress {dial.dial_id}"
                    )
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except GRPCError as error:
            if error.status is not Status.UNIMPLEMENTED:
                raise
            log.info("the manager posts no egress dials (an older version)")
            await asyncio.Event().wait()  # until the session's watches are replaced

    async def flow(self, channel: Channel, session_id: str, dial: manager.EgressDial) -> None:
        """Answer one dial: claim it with a tunnel, dial, relay. Ends only this flow."""
        idle = DEFAULT_IDLE_TIMEOUT
        if dial.idle_timeout is not None and dial.idle_timeout.total_seconds() > 0:
            idle = dial.idle_timeout.total_seconds()
        answer = common.TunnelMessage(
            open=common.TunnelOpen(
                session_id=session_id, dial_id=dial.dial_id, connection=dial.connection
            )
        )
        try:
            async with channel.request(
                TUNNEL_PATH,
                Cardinality.STREAM_STREAM,
                common.TunnelMessage,
                common.TunnelMessage,
                timeout=None,  # the relay's idle timeout bounds the flow
            ) as stream:
                await stream.send_message(answer)
                try:
                    host, port, udp = destination_of(dial.connection)
                except ValueError as error:
                    await self._refuse(stream, str(error))
                    return
                flow = await dialing.dial(stream, host, port, udp=udp, dial_timeout=DIAL_TIMEOUT)
                if flow is None:
                    self.refused += 1
                    await stream.end()
                    return
                self.dialled += 1
                await flow.relay(stream, idle_timeout=idle)
                await stream.end()
        except (GRPCError, OSError, TimeoutError, StreamTerminatedError) as error:
            log.info("egress flow of dial %s ended: %s", dial.dial_id, describe(error))

    async def _refuse(self, stream: Stream[Any, Any], reason: str) -> None:
        self.refused += 1
        await stream.send_message(control(common.TunnelControlCode.DIAL_FAILED, reason))
        await stream.end()
