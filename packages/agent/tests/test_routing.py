"""The agent's intercept decisions."""

from __future__ import annotations

from kubepresence.agent.core.config import PortTakeover
from kubepresence.agent.core.routing import AgentIntercept, Routes, review

HTTP = PortTakeover(name="http", app_port=8080, agent_port=9900)
NUMERIC = PortTakeover(name="", app_port=7000, agent_port=9901, redirected=True)


def test_review_by_name_or_number() -> None:
    assert review([HTTP, NUMERIC], AgentIntercept("a", "http", False, False)) == (True, "")
    assert review([HTTP, NUMERIC], AgentIntercept("a", "8080", False, False)) == (True, "")
    assert review([HTTP, NUMERIC], AgentIntercept("a", "7000", False, False)) == (True, "")
    accepted, reason = review([HTTP], AgentIntercept("a", "grpc", False, False))
    assert not accepted
    assert reason == "the pod has no port 'grpc' taken over (ports: http)"
    accepted, reason = review([HTTP], AgentIntercept("a", "http", False, True))
    assert not accepted
    assert "personal" in reason


def test_only_active_global_intercepts_route() -> None:
    routes = Routes()
    routes.update(
        [
            AgentIntercept("waiting", "http", False, False),
            AgentIntercept("personal", "http", True, True),
        ]
    )
    assert routes.intercept_for(HTTP) is None
    routes.update([AgentIntercept("alice:echo", "http", True, False)])
    assert routes.intercept_for(HTTP) == "alice:echo"
    assert routes.intercept_for(NUMERIC) is None
    routes.update([])
    assert routes.intercept_for(HTTP) is None
