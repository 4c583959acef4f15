"""Pairing a waiting tunnel with the tunnel that answers it, both ways.

Intercepts: an agent opens a tunnel naming an intercept; the manager posts a dial on the
owning client's WatchDials stream and holds the agent's tunnel until the client answers
with a tunnel naming that dial, then splices the two. Egress (`--proxy-via`): a client
opens a tunnel naming a workload to leave from; the manager posts a dial on one of its
agents' WatchEgressDials and holds the client's tunnel until that agent answers. Either
way the dial names the one session that may answer it (`answerer`). A dial not claimed in
time fails, so the waiting side is refused fast instead of hanging. The board only keeps
the books; the rpc layer waits and splices.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubepresence.protocol.errors import NotFoundError, UserError


@dataclass(frozen=True)
class Dial:
    id: str
    intercept_id: str  # "" for an egress dial
    answerer: str  # the session that must answer: the intercept's client, or the agent
    deadline: float


class DialBoard:
    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("the dial timeout must be positive")
        self.timeout = timeout
        self._pending: dict[str, Dial] = {}

    def post(self, dial_id: str, intercept_id: str, answerer: str, now: float) -> Dial:
        if dial_id in self._pending:
            raise UserError(f"dial {dial_id!r} exists already")
        dial = Dial(dial_id, intercept_id, answerer, now + self.timeout)
        self._pending[dial_id] = dial
        return dial

    def claim(self, dial_id: str, answerer: str, now: float) -> Dial:
        """A session answers a dial: it must be its own, and still pending."""
        dial = self._pending.get(dial_id)
        if dial is None or dial.deadline < now:
            self._pending.pop(dial_id, None)
            raise NotFoundError(f"dial {dial_id!r} is unknown or timed out")
        if dial.answerer != answerer:
            raise UserError(f"dial {dial_id!r} belongs to another session")
        del self._pending[dial_id]
        return dial

    def withdraw(self, dial_id: str) -> Dial | None:
        """The waiting side gave up (timeout, caller gone)."""
        return self._pending.pop(dial_id, None)

    def expire(self, now: float) -> list[Dial]:
        gone = [d for d in self._pending.values() if d.deadline < now]
        for dial in gone:
            del self._pending[dial.id]
        return gone

    def drop_answerer(self, answerer: str) -> list[Dial]:
        """The session that was to answer ended: its pending dials are gone."""
        gone = [d for d in self._pending.values() if d.answerer == answerer]
        for dial in gone:
            del self._pending[dial.id]
        return gone

    def __contains__(self, dial_id: object) -> bool:
        """Still pending (its deadline may have passed: `claim` decides)."""
        return dial_id in self._pending

    def __len__(self) -> int:
        return len(self._pending)
