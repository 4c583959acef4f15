"""Hand-overs without the manager: clients that port-forward to this pod take their
intercepts' connections from the agent straight.

A client (userd) port-forwards to the agent's `direct_port` and watches its dials there
(`watch`, Agent WatchDials). While a client watches, the connections of its intercepts
are posted on its watch: the client answers each with an Agent AnswerDial tunnel naming
the dial (`answered`), whose first message is CONNECTED or DIAL_FAILED, exactly as the
manager's HandOver would pass it on. A client that does not watch here (it may not
port-forward to this namespace, or its watch is not up yet) gets its connections through
the manager, as before. One hop less per byte: agent → userd, not agent → manager → userd.

Plain types here; `rpc.direct` translates the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

KEEP_ALIVE = 15.0  # a watch with nothing to post still says something this often
ANSWER_TIMEOUT = 10.0  # a posted dial the client does not answer: the caller is reset

Address = tuple[str, int]


@dataclass(frozen=True)
class PostedDial:
    """One intercepted connection for the client to take (a DialRequest)."""

    dial_id: str
    intercept_id: str
    peer: Address  # the caller in the cluster
    local: Address  # the address it reached
    local_host: str  # where the workstation delivers it
    local_port: int


class NoAnswerError(ConnectionError):
    """The watching client did not answer the dial in time."""


class UnknownDialError(LookupError):
    """An answer names no dial that waits (withdrawn, or never posted here)."""


class _Answer:
    """The client's AnswerDial stream for one dial, as the hand-over uses it: `end` lets
    the servicer's call finish (a server stream ends when its handler returns)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.finished = asyncio.Event()

    async def send_message(self, message: Any) -> None:
        await self._stream.send_message(message)

    async def recv_message(self) -> Any:
        return await self._stream.recv_message()

    async def end(self) -> None:
        self.finished.set()


class DirectDesk:
    def __init__(self, answer_timeout: float = ANSWER_TIMEOUT) -> None:
        self._answer_timeout = answer_timeout
        self._watches: dict[str, list[asyncio.Queue[PostedDial]]] = {}  # client session →
        self._waiting: dict[str, asyncio.Future[_Answer]] = {}  # dial id → its answer
        self.handed_over = 0  # connections that went to a client this way

    def watching(self, client: str) -> bool:
        return bool(self._watches.get(client))

    async def watch(self, client: str) -> AsyncIterator[PostedDial | None]:
        """The dials posted to this client while the watch lasts; None is a keep-alive."""
        queue: asyncio.Queue[PostedDial] = asyncio.Queue()
        watches = self._watches.setdefault(client, [])
        watches.append(queue)
        log.info("client %s watches its dials here (%d watch(es))", client, len(watches))
        try:
            yield None  # the watch is up: the client knows its connections come this way
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), KEEP_ALIVE)
                except TimeoutError:
                    yield None
        finally:
            watches.remove(queue)
            if not watches:
                del self._watches[client]
            log.info("client %s stopped watching here", client)

    @contextlib.asynccontextmanager
    async def hand_over(
        self,
        client: str,
        intercept_id: str,
        peer: Address,
        local: Address,
        workstation: Address,
    ) -> AsyncIterator[_Answer]:
        """Post the connection on the client's newest watch and yield its answer stream
        once it answers; NoAnswerError when it does not in time."""
        watches = self._watches.get(client)
        if not watches:
            raise NoAnswerError(f"client {client} does not watch here")
        dial_id = str(uuid.uuid4())
        answer: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._waiting[dial_id] = answer
        watches[-1].put_nowait(PostedDial(dial_id, intercept_id, peer, local, *workstation))
        try:
            async with asyncio.timeout(self._answer_timeout):
                stream = await answer
        except TimeoutError:
            raise NoAnswerError(f"client {client} did not answer the dial") from None
        finally:
            self._waiting.pop(dial_id, None)
        self.handed_over += 1
        try:
            yield stream
        finally:
            stream.finished.set()

    async def answered(self, dial_id: str, stream: Any) -> None:
        """The client's AnswerDial for `dial_id`: hand it to the waiting connection and
        return when that connection is done with it."""
        waiting = self._waiting.get(dial_id)
        if waiting is None or waiting.done():
            raise UnknownDialError(f"no connection waits for dial {dial_id}")
        answer = _Answer(stream)
        waiting.set_result(answer)
        await answer.finished.wait()
