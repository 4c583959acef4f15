"""The manager's egress desk: client flows that leave the cluster from a workload's agent.

(The servicer translates: this shell sees plain dials and any stream that pipes tunnel
messages; a connection is passed on in its wire encoding.)

A client's DialCluster tunnel whose open names a workload to leave from (`via_namespace`,
`via_workload`: `--proxy-via CIDR=WORKLOAD`) is not dialled by the manager. The desk
chooses one of the workload's connected agents (core.egress), posts a dial on the board
(core.dials) and on that agent's WatchEgressDials stream, and holds the client's tunnel
until the agent answers with an AnswerDial tunnel naming the dial; then it splices the two (the
agent's first answer is CONNECTED or DIAL_FAILED, as the manager's own dial would say).
No connected agent: DIAL_FAILED at once. An agent that does not answer within the dial
timeout, or leaves first: DIAL_FAILED.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass

from kubepresence.manager.core.dials import DialBoard
from kubepresence.manager.core.egress import EgressChooser
from kubepresence.manager.flows.splicing import Pipe, Rendezvous
from kubepresence.protocol.errors import NotFoundError
from kubepresence.protocol.tunnel import send_dial_failed

log = logging.getLogger(__name__)

KEEP_ALIVE = 15.0


@dataclass(frozen=True)
class PostedEgressDial:
    """A client's flow posted to an agent to dial from its pod (an EgressDial)."""

    dial_id: str
    connection: bytes  # the client's ConnectionId, wire-encoded: the agent reads it
    idle_timeout: float  # the client's, for the agent's relay


class EgressDesk:
    def __init__(self, now: Callable[[], float], dial_timeout: float) -> None:
        self.dials = DialBoard(dial_timeout)
        self.chooser = EgressChooser()
        self._now = now
        self._queues: dict[str, asyncio.Queue[PostedEgressDial]] = {}  # agent session →
        self._rendezvous: dict[str, Rendezvous] = {}  # dial id → the client's tunnel

    async def watch(self, agent: str) -> AsyncIterator[PostedEgressDial | None]:
        """The dials posted to this agent, with a keep-alive (None)."""
        queue = self._queues.setdefault(agent, asyncio.Queue())
        while True:
            try:
                dial = await asyncio.wait_for(queue.get(), KEEP_ALIVE)
            except TimeoutError:
                yield None
                continue
            if dial.dial_id in self.dials:  # not withdrawn while it queued: still wanted
                yield dial

    async def client_tunnel(
        self,
        client: str,
        stream: Pipe,
        via: tuple[str, str],
        connection: bytes,
        agents: Collection[str],
        idle_timeout: float,
    ) -> None:
        """A client's flow via the workload `via` (namespace, name) whose connected
        agents' sessions are `agents`."""
        workload = "/".join(via)
        agent = self.chooser.choose(agents)
        if agent is None:
            log.info("flow via %s refused: no agent of it is connected", workload)
            await send_dial_failed(stream, f"no traffic agent of workload {workload} is connected")
            return
        dial_id = str(uuid.uuid4())
        try:
            self.dials.post(dial_id, "", agent, self._now())
            meeting = self._rendezvous[dial_id] = Rendezvous(stream, owner=client)
            self._queues.setdefault(agent, asyncio.Queue()).put_nowait(
                PostedEgressDial(dial_id, connection, idle_timeout)
            )
            log.debug("flow via %s: dial %s posted to %s", workload, dial_id, agent)
            # Until the splice ends: returning earlier would end the client's stream.
            if not await meeting.wait(self.dials.timeout + 1):
                self.dials.withdraw(dial_id)
                reason = meeting.failure or f"the traffic agent of {workload} did not answer"
                log.info("flow via %s: dial %s failed: %s", workload, dial_id, reason)
                await send_dial_failed(stream, reason)
        finally:
            self._rendezvous.pop(dial_id, None)
            self.chooser.ended(agent)

    async def agent_tunnel(self, agent: str, stream: Pipe, dial_id: str) -> None:
        """AnswerDial from an agent: splice its tunnel to the waiting client's DialCluster."""
        dial = self.dials.claim(dial_id, agent, self._now())
        meeting = self._rendezvous.get(dial.id)
        if meeting is None:
            raise NotFoundError(f"dial {dial.id} has no waiting client")
        await meeting.splice(stream)

    def agent_gone(self, agent: str) -> None:
        """The agent's session ended: its pending dials fail now, its queue goes."""
        for dial in self.dials.drop_answerer(agent):
            meeting = self._rendezvous.get(dial.id)
            if meeting is not None:
                meeting.fail(f"the traffic agent ({agent}) left")
        self._queues.pop(agent, None)
        self.chooser.forget(agent)

    def client_gone(self, client: str) -> None:
        """The client's session ended: its flows waiting for an agent give up."""
        for dial_id, meeting in list(self._rendezvous.items()):
            if meeting.owner == client and self.dials.withdraw(dial_id) is not None:
                meeting.fail(f"the client {client} is gone")
