"""The `status` line of where intercepted connections come from (`inbound_summary`)."""

from __future__ import annotations

from kubepresence.userd.agentdials import AgentPod, inbound_summary

A = AgentPod("shop", "echo-a", 9902)
B = AgentPod("shop", "echo-b", 9902)
REFUSED = "port-forward to shop/echo-b:9902 refused: 403 Forbidden"


def test_no_active_intercept_says_nothing() -> None:
    assert inbound_summary([], set(), {}) == ""


def test_every_pod_up_is_straight() -> None:
    assert inbound_summary([A, B], {A, B}, {}) == (
        "straight from the agents (2 pod(s), port-forward to each)"
    )


def test_a_refused_pod_goes_through_the_manager_and_says_why() -> None:
    assert inbound_summary([A, B], {A}, {B: REFUSED}) == (
        f"through the traffic manager for 1 of 2 agent pod(s) (shop/echo-b): {REFUSED}"
    )


def test_a_pod_whose_watch_is_not_up_yet_goes_through_the_manager() -> None:
    summary = inbound_summary([A], set(), {})
    assert summary == (
        "through the traffic manager for 1 of 1 agent pod(s) (shop/echo-a): "
        "the port-forward is opening"
    )


def test_a_problem_outweighs_an_earlier_up() -> None:
    assert inbound_summary([A], {A}, {A: REFUSED}).startswith("through the traffic manager")
