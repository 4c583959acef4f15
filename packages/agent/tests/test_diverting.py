"""Which accepted connections the agent diverts: none without a session or an intercept;
a global intercept's port hands the whole connection over."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubepresence.agent import handing
from kubepresence.agent.core.routing import AgentIntercept, Routes
from kubepresence.agent.direct import DirectDesk
from kubepresence.agent.handing import Diverter
from kubepresence.agent.net.appdialing import AppDialer
from kubepresence.protocol.agents import PortTakeover

HTTP = PortTakeover("http", 8080, 9900)
OTHER = PortTakeover("grpc", 9090, 9901)


class FakeSession:
    def __init__(self, session_id: str | None) -> None:
        self.session_id = session_id
        self.channel = object()


def diverter(session: FakeSession, *intercepts: AgentIntercept) -> Diverter:
    routes = Routes()
    routes.update(intercepts)
    return Diverter(session, routes, AppDialer("127.0.0.1"), {}, DirectDesk())  # type: ignore[arg-type]


@pytest.fixture
def handed_over(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    async def hand_over(hand_overs: handing.HandOvers, intercept_id: str, *_: Any) -> None:
        calls.append((hand_overs.session.channel, hand_overs.session.session_id, intercept_id))

    monkeypatch.setattr(handing, "hand_over", hand_over)
    return calls


GLOBAL = AgentIntercept("alice:echo", "http", True)


@pytest.mark.parametrize(
    ("session", "intercepts", "takeover"),
    [
        (FakeSession(None), [GLOBAL], HTTP),  # the agent has not arrived yet, or lost it
        (FakeSession("agent-1"), [], HTTP),  # nothing intercepted
        (FakeSession("agent-1"), [AgentIntercept("alice:echo", "http", False)], HTTP),  # waiting
        (FakeSession("agent-1"), [GLOBAL], OTHER),  # another port is intercepted
    ],
)
async def test_the_app_keeps_the_connection(
    session: FakeSession,
    intercepts: list[AgentIntercept],
    takeover: PortTakeover,
    handed_over: list[tuple[Any, ...]],
) -> None:
    reader = asyncio.StreamReader()
    assert await diverter(session, *intercepts)(takeover, reader, None) is False  # type: ignore[arg-type]
    assert handed_over == []


async def test_a_global_intercept_takes_the_whole_connection(
    handed_over: list[tuple[Any, ...]],
) -> None:
    session = FakeSession("agent-1")
    divert = diverter(session, GLOBAL)
    assert await divert(HTTP, asyncio.StreamReader(), None) is True  # type: ignore[arg-type]
    assert handed_over == [(session.channel, "agent-1", "alice:echo")]
