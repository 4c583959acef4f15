"""Splicing a waiting tunnel with the tunnel that answers its dial (see core.dials).

The waiting side's handler holds its stream in a Rendezvous until the answering side's
handler claims the dial and pumps messages both ways; the waiting handler must not
return meanwhile (its stream would end), so it waits for the claim with the dial's
timeout and then, without a timeout, for the splice to end: the flow's own idle timeouts
bound it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol


class Pipe(Protocol):
    """One tunnel's stream, either side: the server side of a grpclib stream."""

    async def send_message(self, message: Any) -> None: ...
    async def recv_message(self) -> Any: ...


@dataclass
class Rendezvous:
    """A tunnel waiting for its dial to be answered."""

    stream: Pipe
    owner: str = ""  # the waiting side's session
    # Set when the dial is claimed, or given up (then `failure` says why).
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # the splice ended
    failure: str = ""  # why the dial will never be answered

    def fail(self, reason: str) -> None:
        """The answering side is gone: the waiting side gives up now."""
        if not self.answered.is_set():
            self.failure = reason
            self.answered.set()

    async def wait(self, answer_within: float) -> bool:
        """True once the splice is over; False if nobody answered in time (or `fail`)."""
        try:
            await asyncio.wait_for(self.answered.wait(), answer_within)
        except TimeoutError:
            return False
        if self.failure:
            return False
        await self.done.wait()
        return True

    async def splice(self, answering: Pipe) -> None:
        """The answering side claimed the dial: pump until either side ends its stream."""
        self.answered.set()
        try:
            await splice(self.stream, answering)
        finally:
            self.done.set()


async def splice(a: Pipe, b: Pipe) -> None:
    """Pump tunnel messages both ways until either side ends its stream."""

    async def pump(source: Pipe, sink: Pipe) -> None:
        while (message := await source.recv_message()) is not None:
            await sink.send_message(message)

    async with asyncio.TaskGroup() as group:
        up = group.create_task(pump(b, a), name="splice-to-waiting")
        down = group.create_task(pump(a, b), name="splice-to-answering")
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        up.cancel()
        down.cancel()
