"""Intercept bookkeeping: conflicts, agent reviews, state changes."""

from __future__ import annotations

import pytest

from kubepresence.manager.core.intercepts import (
    InterceptRegistry,
    InterceptState,
    Target,
)
from kubepresence.protocol.errors import Category, KubepresenceError
from kubepresence.protocol.httpfilter import HttpFilter

ORDERS = Target("shop", "orders", "http")
LOCAL = ("127.0.0.1", 8080)


def test_waits_for_every_agent_then_active() -> None:
    registry = InterceptRegistry()
    registry.agents_changed("shop", "orders", {"orders-a", "orders-b"})
    intercept = registry.create("alice", "orders", ORDERS, LOCAL)
    assert intercept.state is InterceptState.WAITING
    assert intercept.message == "waiting for 2 of 2 agents to accept"
    registry.review(intercept.id, "orders-a", accepted=True)
    assert intercept.message == "waiting for 1 of 2 agents to accept"
    registry.review(intercept.id, "orders-b", accepted=True)
    assert (intercept.state, intercept.message) == (InterceptState.ACTIVE, "")


def test_before_any_agent_is_known_it_waits() -> None:
    registry = InterceptRegistry()
    intercept = registry.create("alice", "orders", ORDERS, LOCAL)
    assert (intercept.state, intercept.message) == (InterceptState.WAITING, "waiting for agents")
    changed = registry.agents_changed("shop", "orders", {"orders-a"})
    assert changed == [intercept]
    assert intercept.message == "waiting for 1 of 1 agents to accept"


def test_a_new_pod_must_review_again_and_a_gone_pod_is_forgotten() -> None:
    registry = InterceptRegistry()
    registry.agents_changed("shop", "orders", {"orders-a"})
    intercept = registry.create("alice", "orders", ORDERS, LOCAL)
    registry.review(intercept.id, "orders-a", accepted=True)
    states = [intercept.state]
    registry.agents_changed("shop", "orders", {"orders-a", "orders-c"})
    states.append(intercept.state)
    registry.agents_changed("shop", "orders", {"orders-c"})
    assert intercept.accepted_by == set()
    registry.review(intercept.id, "orders-c", accepted=True)
    states.append(intercept.state)
    assert states == [InterceptState.ACTIVE, InterceptState.WAITING, InterceptState.ACTIVE]


def test_no_agent_left() -> None:
    registry = InterceptRegistry()
    registry.agents_changed("shop", "orders", {"orders-a"})
    intercept = registry.create("alice", "orders", ORDERS, LOCAL)
    registry.agents_changed("shop", "orders", set())
    assert intercept.state is InterceptState.NO_AGENT
    assert intercept.message == "shop/orders has no agent"


def test_refusal_is_an_error_that_stands() -> None:
    registry = InterceptRegistry()
    registry.agents_changed("shop", "orders", {"orders-a"})
    intercept = registry.create("alice", "orders", ORDERS, LOCAL)
    registry.review(intercept.id, "orders-a", accepted=False, message="port 8080 not taken over")
    assert intercept.state is InterceptState.ERROR
    assert intercept.message == "agent orders-a: port 8080 not taken over"
    registry.agents_changed("shop", "orders", {"orders-a", "orders-b"})
    assert intercept.state is InterceptState.ERROR


def test_review_by_a_stranger_is_refused() -> None:
    registry = InterceptRegistry()
    registry.agents_changed("shop", "orders", {"orders-a"})
    intercept = registry.create("alice", "orders", ORDERS, LOCAL)
    with pytest.raises(KubepresenceError, match="not an agent of port http of shop/orders"):
        registry.review(intercept.id, "payments-x", accepted=True)


def test_global_intercepts_do_not_share_a_port() -> None:
    registry = InterceptRegistry()
    registry.create("alice", "orders", ORDERS, LOCAL)
    with pytest.raises(KubepresenceError, match="already intercepted by another client") as e:
        registry.create("bob", "orders", ORDERS, LOCAL)
    assert e.value.category is Category.USER
    with pytest.raises(KubepresenceError, match="already have an intercept named 'orders'"):
        registry.create("alice", "orders", Target("shop", "orders", "grpc"), LOCAL)
    # Another port of the same workload is free.
    registry.create("bob", "orders-grpc", Target("shop", "orders", "grpc"), LOCAL)


def test_personal_intercepts_share_a_port_but_not_with_a_global_one() -> None:
    registry = InterceptRegistry()
    alice = HttpFilter(headers=(("x-dev", "alice"),))
    bob = HttpFilter(headers=(("x-dev", "bob"),))
    registry.create("alice", "orders", ORDERS, LOCAL, alice)
    registry.create("bob", "orders", ORDERS, LOCAL, bob)
    with pytest.raises(KubepresenceError, match="same filter"):
        registry.create("carol", "orders", ORDERS, LOCAL, alice)
    with pytest.raises(KubepresenceError, match="personal intercept 'orders'"):
        registry.create("carol", "orders", ORDERS, LOCAL)
    assert [i.client for i in registry.for_workload("shop", "orders")] == ["alice", "bob"]


def test_leaving_and_client_expiry() -> None:
    registry = InterceptRegistry()
    registry.create("alice", "orders", ORDERS, LOCAL)
    registry.create("alice", "other", Target("shop", "payments", "http"), LOCAL)
    assert registry.remove("alice", "orders").name == "orders"
    with pytest.raises(KubepresenceError, match="no intercept named 'orders'"):
        registry.remove("alice", "orders")
    assert [i.name for i in registry.drop_client("alice")] == ["other"]
    assert registry.for_client("alice") == []
    # The port is free again.
    registry.create("bob", "orders", ORDERS, LOCAL)


def test_an_accepting_agents_note_shows_while_active() -> None:
    registry = InterceptRegistry()
    registry.agents_changed("shop", "orders", {"orders-a"})
    alice = HttpFilter(headers=(("x-dev", "alice"),))
    intercept = registry.create("alice", "orders", ORDERS, LOCAL, alice)
    registry.review(intercept.id, "orders-a", accepted=True)
    assert (intercept.state, intercept.message) == (InterceptState.ACTIVE, "")
    registry.review(intercept.id, "orders-a", accepted=True, message="not all HTTP")
    assert (intercept.state, intercept.message) == (InterceptState.ACTIVE, "not all HTTP")
    registry.review(intercept.id, "orders-a", accepted=True)  # a plain review keeps it
    assert intercept.message == "not all HTTP"
    registry.agents_changed("shop", "orders", {"orders-a", "orders-b"})
    assert intercept.message == "waiting for 1 of 2 agents to accept"
