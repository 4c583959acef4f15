"""Hand-overs: an agent's intercepted connection, held until the intercept's client takes it.

An agent's HandOver tunnel names an active intercept. The desk posts a dial on the board
(core.dials) and on the owning client's WatchDials queue, and holds the agent's tunnel
until the client answers with an AnswerDial tunnel naming the dial; then it splices the
two (the client's first answer is CONNECTED or DIAL_FAILED). A client that does not
answer within the dial timeout: DIAL_FAILED to the agent. A client that leaves: its
pending hand-overs fail at once, not at the timeout.

(The servicer translates: this shell sees plain dials and any stream that pipes tunnel
messages; a connection is passed on in its wire encoding.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from kubepresence.manager.core.dials import DialBoard
from kubepresence.manager.core.intercepts import Intercept
from kubepresence.manager.flows.splicing import Pipe, Rendezvous
from kubepresence.protocol.errors import NotFoundError
from kubepresence.protocol.tunnel import send_dial_failed

KEEP_ALIVE = 15.0


@dataclass(frozen=True)
class PostedHandOver:
    """A connection for the client to take (a DialRequest on its WatchDials)."""

    dial_id: str
    intercept_id: str
    connection: bytes  # the agent's ConnectionId, wire-encoded, passed on unread
    local_host: str  # where the workstation delivers it
    local_port: int


class HandOverDesk:
    def __init__(self, now: Callable[[], float], dial_timeout: float) -> None:
        self.dials = DialBoard(dial_timeout)
        self._now = now
        self._queues: dict[str, asyncio.Queue[PostedHandOver]] = {}  # client session →
        self._rendezvous: dict[str, Rendezvous] = {}  # dial id → the agent's tunnel

    async def watch(self, client: str) -> AsyncIterator[PostedHandOver | None]:
        """The hand-overs posted to this client, with a keep-alive (None)."""
        queue = self._queues.setdefault(client, asyncio.Queue())
        while True:
            try:
                yield await asyncio.wait_for(queue.get(), KEEP_ALIVE)
            except TimeoutError:
                yield None

    async def agent_tunnel(
        self, stream: Pipe, agent: str, intercept: Intercept, connection: bytes
    ) -> None:
        """An agent hands over a connection of the active `intercept`: wait for its
        client, then splice."""
        dial_id = str(uuid.uuid4())
        self.dials.post(dial_id, intercept.id, intercept.client, self._now())
        meeting = Rendezvous(stream, owner=agent)
        self._rendezvous[dial_id] = meeting
        queue = self._queues.setdefault(intercept.client, asyncio.Queue())
        queue.put_nowait(
            PostedHandOver(
                dial_id, intercept.id, connection, intercept.local_host, intercept.local_port
            )
        )
        try:
            # Until the splice ends: returning earlier would end the agent's stream.
            if not await meeting.wait(self.dials.timeout + 1):
                self.dials.withdraw(dial_id)
                await send_dial_failed(
                    stream, f"the workstation of {intercept.client} did not answer"
                )
        finally:
            self._rendezvous.pop(dial_id, None)

    async def client_tunnel(self, client: str, stream: Pipe, dial_id: str) -> None:
        """AnswerDial from a client: splice its tunnel to the waiting agent's HandOver."""
        dial = self.dials.claim(dial_id, client, self._now())
        meeting = self._rendezvous.get(dial.id)
        if meeting is None:
            raise NotFoundError(f"dial {dial.id} has no waiting agent")
        await meeting.splice(stream)

    def client_gone(self, client: str) -> None:
        """The client's session ended: the agents waiting for it are refused now."""
        for dial in self.dials.drop_answerer(client):
            meeting = self._rendezvous.get(dial.id)
            if meeting is not None:  # the agent's caller is refused now, not at the timeout
                meeting.fail(f"the client {client} is gone")
        self._queues.pop(client, None)
