"""Client and agent sessions of the traffic manager.

A session starts when a client (a workstation's userd) or an agent arrives, lives while it
keeps calling Remain, and ends when it departs or stays silent for longer than the TTL.
The registry only decides: the caller supplies the session ids and the current time, and
runs `expire(now)` when `next_expiry()` says so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kubepresence.protocol.errors import NotFoundError, UserError


class SessionKind(enum.Enum):
    CLIENT = "client"
    AGENT = "agent"


class UnknownSessionError(NotFoundError):
    """A call named a session that expired or never existed: the caller must arrive again."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} is unknown or expired; arrive again")
        self.session_id = session_id


@dataclass
class Session:
    id: str
    kind: SessionKind
    name: str  # client: user@host; agent: pod name
    namespace: str = ""  # agents: the pod's namespace
    version: str = ""
    last_seen: float = 0.0
    details: dict[str, str] = field(default_factory=dict)


class SessionRegistry:
    def __init__(self, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("the session TTL must be positive")
        self.ttl = ttl
        self._sessions: dict[str, Session] = {}

    def arrive(self, session: Session, now: float) -> Session:
        if not session.id:
            raise UserError("a session needs an id")
        if session.id in self._sessions:
            raise UserError(f"session {session.id!r} exists already")
        session.last_seen = now
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise UnknownSessionError(session_id) from None

    def remain(self, session_id: str, now: float) -> Session:
        session = self.get(session_id)
        session.last_seen = now
        return session

    def depart(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def expire(self, now: float) -> list[Session]:
        """Remove and return the sessions silent for longer than the TTL."""
        expired = [s for s in self._sessions.values() if now - s.last_seen > self.ttl]
        for session in expired:
            del self._sessions[session.id]
        return expired

    def next_expiry(self) -> float | None:
        """When the next session would expire if it stays silent."""
        if not self._sessions:
            return None
        return min(s.last_seen for s in self._sessions.values()) + self.ttl

    def of_kind(self, kind: SessionKind) -> list[Session]:
        return [s for s in self._sessions.values() if s.kind is kind]

    def __len__(self) -> int:
        return len(self._sessions)
