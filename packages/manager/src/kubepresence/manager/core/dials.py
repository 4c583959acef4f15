"""Handing an intercepted connection from an agent to the client that owns the intercept.

An agent opens a tunnel naming an intercept; the manager posts a dial on the owning
client's WatchDials stream and holds the agent's tunnel until the client answers with a
tunnel naming that dial, then splices the two. A dial the client does not claim in time
fails, so the caller in the cluster is refused fast instead of hanging. The board only
keeps the books; the rpc layer waits and splices.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubepresence.protocol.errors import NotFoundError, UserError


@dataclass(frozen=True)
class Dial:
    id: str
    intercept_id: str
    client: str
    deadline: float


class DialBoard:
    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("the dial timeout must be positive")
        self.timeout = timeout
        self._pending: dict[str, Dial] = {}

    def post(self, dial_id: str, intercept_id: str, client: str, now: float) -> Dial:
        if dial_id in self._pending:
            raise UserError(f"dial {dial_id!r} exists already")
        dial = Dial(dial_id, intercept_id, client, now + self.timeout)
        self._pending[dial_id] = dial
        return dial

    def claim(self, dial_id: str, client: str, now: float) -> Dial:
        """The client answers a dial: it must be its own, and still pending."""
        dial = self._pending.get(dial_id)
        if dial is None or dial.deadline < now:
            self._pending.pop(dial_id, None)
            raise NotFoundError(f"dial {dial_id!r} is unknown or timed out")
        if dial.client != client:
            raise UserError(f"dial {dial_id!r} belongs to another client")
        del self._pending[dial_id]
        return dial

    def withdraw(self, dial_id: str) -> Dial | None:
        """The agent's side gave up (timeout, caller gone)."""
        return self._pending.pop(dial_id, None)

    def expire(self, now: float) -> list[Dial]:
        gone = [d for d in self._pending.values() if d.deadline < now]
        for dial in gone:
            del self._pending[dial.id]
        return gone

    def drop_client(self, client: str) -> list[Dial]:
        gone = [d for d in self._pending.values() if d.client == client]
        for dial in gone:
            del self._pending[dial.id]
        return gone

    def __len__(self) -> int:
        return len(self._pending)
