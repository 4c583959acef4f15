"""The agent's intercept decisions."""

from __future__ import annotations

from kubepresence.agent.core.routing import AgentIntercept, Personal, Routes, review
from kubepresence.protocol.agents import PortTakeover
from kubepresence.protocol.httpfilter import HttpFilter

HTTP = PortTakeover(name="http", app_port=8080, agent_port=9900)
NUMERIC = PortTakeover(name="", app_port=7000, agent_port=9901, redirected=True)
ALICE = HttpFilter(headers=(("x-dev", "alice"),))
BOB = HttpFilter(headers=(("x-dev", "bob"),), path_prefix="/api/")


def test_review_by_name_or_number() -> None:
    assert review([HTTP, NUMERIC], AgentIntercept("a", "http", False)) == (True, "")
    assert review([HTTP, NUMERIC], AgentIntercept("a", "8080", False)) == (True, "")
    assert review([HTTP, NUMERIC], AgentIntercept("a", "7000", False)) == (True, "")
    assert review([HTTP], AgentIntercept("a", "http", False, ALICE)) == (True, "")
    accepted, reason = review([HTTP], AgentIntercept("a", "grpc", False))
    assert not accepted
    assert reason == "the pod has no port 'grpc' taken over (ports: http)"


def test_only_active_global_intercepts_take_connections() -> None:
    routes = Routes()
    routes.update(
        [AgentIntercept("waiting", "http", False), AgentIntercept("alice", "http", True, ALICE)]
    )
    assert routes.intercept_for(HTTP) is None
    routes.update([AgentIntercept("alice:echo", "http", True)])
    assert routes.intercept_for(HTTP) == "alice:echo"
    assert routes.intercept_for(NUMERIC) is None
    routes.update([])
    assert routes.intercept_for(HTTP) is None


def test_personal_intercepts_take_matching_requests_only() -> None:
    routes = Routes()
    routes.update(
        [
            AgentIntercept("bob", "8080", True, BOB),
            AgentIntercept("alice", "http", True, ALICE),
            AgentIntercept("carol", "http", False, HttpFilter(method="GET")),  # not active
        ]
    )
    assert routes.personal_for(HTTP) == Personal((("alice", ALICE), ("bob", BOB)))
    assert routes.personal_for(NUMERIC) is None
    assert routes.choose(HTTP, "GET", "/x", [("X-Dev", "alice")]) == "alice"
    assert routes.choose(HTTP, "GET", "/api/x", [("x-dev", "bob")]) == "bob"
    assert routes.choose(HTTP, "GET", "/other", [("x-dev", "bob")]) is None
    assert routes.choose(HTTP, "GET", "/x", []) is None
    assert routes.choose(NUMERIC, "GET", "/x", [("x-dev", "alice")]) is None


def test_a_global_intercept_wins_over_personal_ones() -> None:
    routes = Routes()
    routes.update([AgentIntercept("alice", "http", True, ALICE), AgentIntercept("g", "http", True)])
    assert routes.intercept_for(HTTP) == "g"
    assert routes.personal_for(HTTP) is None
    assert routes.choose(HTTP, "GET", "/", [("x-dev", "alice")]) is None


def test_one_container_port_named_two_ways_is_one_port() -> None:
    named_global = AgentIntercept("alice:echo", "http", True)
    assert review([HTTP], AgentIntercept("bob:echo", "8080", False), [named_global]) == (
        False,
        "port 8080 is port http of the app, already intercepted (alice:echo): "
        "a global intercept cannot share a port",
    )
    personal = AgentIntercept("alice:p", "http", True, ALICE)
    accepted, reason = review([HTTP], AgentIntercept("bob:p", "8080", False, ALICE), [personal])
    assert not accepted
    assert "with the same filter" in reason
    # Different filters share the port; other ports are not concerned.
    assert review([HTTP], AgentIntercept("bob:p", "8080", False, BOB), [personal]) == (True, "")
    assert review([HTTP, NUMERIC], AgentIntercept("c", "7000", False), [named_global]) == (
        True,
        "",
    )
    assert review([HTTP], named_global, [named_global]) == (True, "")  # itself
