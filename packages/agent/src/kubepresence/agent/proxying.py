"""Proxying client flows out of the pod: the agent's side of `--proxy-via CIDR=WORKLOAD`.

A client may ask that its flows to some destinations leave the cluster from a pod of a
named workload (to get that pod's address, network policies and egress). The manager
picks one of the workload's agents and posts an EgressDial on its WatchEgressDials
stream. For each dial the agent opens an AnswerDial tunnel naming it (dial_id), which the
manager splices with the client's DialCluster tunnel, then dials the destination from
inside the pod and answers CONNECTED or DIAL_FAILED on it, as the manager's own dial
would. Then bytes flow as they do from the manager's own dials
(`kubepresence.protocol.dialing`, shared with the manager: the tunnel relay for TCP, the
datagram relay for UDP). One task per flow, in the agent's connection task group. The
wire side is `rpc.flows`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpclib.client import Channel

from kubepresence.agent.rpc import flows
from kubepresence.protocol import dialing
from kubepresence.protocol.tunnel import describe

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 5.0  # the manager's dial timeout bounds only the claim: this bounds the dial
DEFAULT_IDLE_TIMEOUT = 600.0  # when the client named none
WATCH_INACTIVITY = 45.0  # three of the manager's keep-alives missed
_ENDED = object()


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
        try:
            async with contextlib.aclosing(flows.watch_egress_dials(channel, session_id)) as orders:
                while True:
                    # The manager sends a keep-alive every 15 s: silence means a dead stream.
                    async with asyncio.timeout(WATCH_INACTIVITY):
                        order = await anext(orders, _ENDED)
                    if order is _ENDED:
                        return
                    if not isinstance(order, flows.EgressOrder):
                        continue  # keep-alive
                    task = self._group.create_task(
                        self.flow(channel, session_id, order), name=f"egress {order.dial_id}"
                    )
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except flows.EgressUnsupportedError:
            log.info("the manager posts no egress dials (an older version)")
            await asyncio.Event().wait()  # until the session's watches are replaced

    async def flow(self, channel: Channel, session_id: str, order: flows.EgressOrder) -> None:
        """Answer one dial: claim it with a tunnel, dial, relay. Ends only this flow."""
        idle = order.idle_timeout or DEFAULT_IDLE_TIMEOUT
        try:
            async with flows.answer_dial(channel, session_id, order) as stream:
                if order.problem:
                    self.refused += 1
                    await flows.refuse(stream, order.problem)
                    return
                flow = await dialing.dial(
                    stream, order.host, order.port, udp=order.udp, dial_timeout=DIAL_TIMEOUT
                )
                if flow is None:
                    self.refused += 1
                    await stream.end()
                    return
                self.dialled += 1
                await flow.relay(stream, idle_timeout=idle)
                await stream.end()
        except flows.STREAM_ERRORS as error:
            log.info("egress flow of dial %s ended: %s", order.dial_id, describe(error))
