"""Session bookkeeping: arrive, remain, depart, expire."""

from __future__ import annotations

import pytest

from kubepresence.manager.core.sessions import (
    Session,
    SessionKind,
    SessionRegistry,
    UnknownSessionError,
)
from kubepresence.protocol.errors import KubepresenceError


def client(session_id: str) -> Session:
    return Session(session_id, SessionKind.CLIENT, "dev@laptop")


def test_silent_sessions_expire_after_the_ttl() -> None:
    registry = SessionRegistry(ttl=15)
    registry.arrive(client("a"), now=100)
    registry.arrive(client("b"), now=105)
    assert registry.next_expiry() == 115
    registry.remain("a", now=112)
    assert registry.expire(now=119) == []
    assert [s.id for s in registry.expire(now=120.5)] == ["b"]
    assert [s.id for s in registry.expire(now=127.5)] == ["a"]
    assert registry.next_expiry() is None


def test_unknown_session_tells_the_caller_to_arrive_again() -> None:
    registry = SessionRegistry(ttl=15)
    with pytest.raises(UnknownSessionError, match="arrive again"):
        registry.remain("nope", now=0)


def test_depart_is_idempotent_and_ids_are_unique() -> None:
    registry = SessionRegistry(ttl=15)
    registry.arrive(client("a"), now=0)
    with pytest.raises(KubepresenceError, match="exists already"):
        registry.arrive(client("a"), now=1)
    assert registry.depart("a") is not None
    assert registry.depart("a") is None
    assert len(registry) == 0


def test_kinds_are_listed_apart() -> None:
    registry = SessionRegistry(ttl=15)
    registry.arrive(client("c"), now=0)
    registry.arrive(Session("g", SessionKind.AGENT, "echo-abc", namespace="shop"), now=0)
    assert [s.id for s in registry.of_kind(SessionKind.AGENT)] == ["g"]


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SessionRegistry(ttl=0)
