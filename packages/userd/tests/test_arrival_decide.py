"""The arrival loop's decision: every branch of `decide`, with the user's lines."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kubepresence.userd.core.arrival import (
    WEBHOOK_RETRIES,
    Confirm,
    Done,
    PodView,
    Replace,
    Snapshot,
    Stuck,
    Wait,
    decide,
    timeout_message,
)

A = PodView("echo-a", has_agent=True, ready=True, phase="Running")
B = PodView("echo-b", has_agent=True, ready=True, phase="Running")
PLAIN = PodView("echo-p", has_agent=False, ready=True, phase="Running")  # passed by the webhook
OLD = PodView("echo-o", has_agent=False, ready=True, current=False, phase="Running")
BASE = Snapshot(intercept="echo", workload="default/echo", wait=120.0)


def at(**changes: Any) -> Snapshot:
    return replace(BASE, **changes)


def test_an_intercept_in_error_is_stuck_with_the_managers_message() -> None:
    assert decide(at(state="error", message="no such port", pods=(A,), replicas=1)) == Stuck(
        "intercept echo: no such port"
    )


def test_a_bare_replicaset_has_its_stale_pods_replaced_once() -> None:
    now = at(pods=(OLD, PLAIN, A), replicas=3, replaces_pods=False)
    assert decide(now) == Replace(
        ("echo-o", "echo-p"), webhook=False, step="injecting the agent: 2 pods to replace"
    )
    # Replaced already: waited for, not deleted again.
    again = decide(replace(now, replaced=frozenset({"echo-o", "echo-p"})))
    assert again == Wait("injecting the agent: 2 pods to replace")


def test_a_bare_replicaset_without_stale_pods_goes_on_to_settle() -> None:
    now = at(pods=(A,), replicas=1, replaces_pods=False, state="active")
    assert decide(now) == Confirm()


def test_pods_the_webhook_let_pass_are_replaced_as_a_webhook_round() -> None:
    now = at(pods=(A, PLAIN), replicas=2)
    assert decide(now) == Replace(
        ("echo-p",), webhook=True, step="injecting the agent: 1 pod to replace"
    )
    assert decide(replace(now, replaced=frozenset({"echo-p"}))) == Wait(
        "injecting the agent: 1 pod to replace"
    )


def test_a_rolling_workload_leaves_its_old_pods_to_the_rollout() -> None:
    # Not current and without the agent: the rollout replaces it, not userd.
    now = at(pods=(A, OLD), replicas=2)
    assert decide(now) == Wait("injecting the agent: 1 pod to replace")


@pytest.mark.parametrize("rounds", range(WEBHOOK_RETRIES))
def test_the_webhook_gets_its_rounds(rounds: int) -> None:
    action = decide(at(pods=(PLAIN,), replicas=1, webhook_rounds=rounds))
    assert isinstance(action, Replace)
    assert action.webhook


def test_after_its_rounds_the_webhook_is_stuck_and_the_template_goes_back() -> None:
    action = decide(at(pods=(PLAIN,), replicas=1, webhook_rounds=WEBHOOK_RETRIES))
    why = (
        "the new pods of default/echo have no agent container (echo-p): the agent-injection "
        "webhook was not called or let them pass (see the traffic manager's log and its "
        "MutatingWebhookConfiguration)"
    )
    failure = (
        "intercept echo: the traffic manager's webhook did not inject the agent "
        f"({WEBHOOK_RETRIES + 1} tries): {why}"
    )
    assert action == Stuck(f"{failure}; the pod template was put back", restore=failure)
    assert "webhook did not inject the agent (4 tries): the new pods of " in action.message


def test_settled_and_active_asks_for_the_agents_and_routes_first() -> None:
    now = at(pods=(A, B), replicas=2, state="active")
    assert decide(now) == Confirm()
    everyone = frozenset({"echo-a", "echo-b"})
    assert decide(replace(now, agents=everyone, routed=everyone, confirmed=True)) == Done()
    # No Service: only the agents count.
    assert decide(replace(now, agents=everyone, routed=None, confirmed=True)) == Done()


def test_an_agent_the_manager_does_not_know_holds_the_wait() -> None:
    now = at(pods=(A, B), replicas=2, state="active", confirmed=True)
    assert decide(replace(now, agents=frozenset({"echo-a"}))) == Wait(
        "waiting for the agent of pod echo-b to report to the traffic manager"
    )


def test_a_pod_the_service_does_not_route_to_holds_the_wait() -> None:
    now = at(pods=(A, B), replicas=2, state="active", confirmed=True)
    both = frozenset({"echo-a", "echo-b"})
    assert decide(replace(now, agents=both, routed=frozenset({"echo-b"}))) == Wait(
        "waiting for the service to route to pod echo-a"
    )


def test_settled_but_not_active_waits_for_the_agents_to_accept() -> None:
    now = at(pods=(A,), replicas=1, state="waiting", message="1 of 2 agents accepted")
    assert decide(now) == Wait("waiting for the agents to accept (1 of 2 agents accepted)")
    assert decide(replace(now, message="")) == Wait("waiting for the agents to accept")


def test_active_hides_the_managers_message_in_the_step() -> None:
    now = at(pods=(A,), replicas=1, state="active", message="all accepted", confirmed=True)
    # Confirmed but with no agent known yet.
    assert decide(replace(now, agents=frozenset())) == Wait(
        "waiting for the agent of pod echo-a to report to the traffic manager"
    )


def test_pods_still_to_come_are_waited_for() -> None:
    assert decide(at(pods=(A,), replicas=2, state="active")) == Wait("waiting for 1 new pod")
    unready = PodView("echo-u", has_agent=True, ready=False)
    assert decide(at(pods=(A, unready), replicas=2)) == Wait("waiting for pod echo-u to be Ready")


def test_a_timeout_is_stuck_with_the_most_telling_reason() -> None:
    now = at(pods=(A,), replicas=2, timed_out=True)
    expected = (
        "intercept echo: the agents did not arrive in 120 s: default/echo has 1 of 2 pods: "
        "new pods are not created (see `kubectl describe` of the workload and its events)"
    )
    assert decide(now) == Stuck(expected)
    assert timeout_message(now) == expected


def test_a_timeout_before_any_pod_was_seen() -> None:
    assert decide(at(timed_out=True)) == Stuck(
        "intercept echo: the agents did not arrive in 120 s: the agents did not accept the "
        "intercept (waiting)"
    )


def test_a_timeout_of_agents_that_did_not_accept_says_the_managers_state() -> None:
    now = at(pods=(A,), replicas=1, timed_out=True, state="waiting", message="0 of 1 accepted")
    assert decide(now) == Stuck(
        "intercept echo: the agents did not arrive in 120 s: the agents did not accept the "
        "intercept (0 of 1 accepted)"
    )
    active = replace(now, state="active", agents=frozenset({"echo-a"}), message="x")
    assert decide(active) == Stuck(
        "intercept echo: the agents did not arrive in 120 s: the agents did not accept the "
        "intercept"
    )


def test_a_timeout_wins_over_everything_else() -> None:
    now = at(state="error", message="boom", pods=(PLAIN,), replicas=1, timed_out=True)
    action = decide(now)
    assert isinstance(action, Stuck)
    assert action.message.startswith("intercept echo: the agents did not arrive in 120 s: ")
    assert not action.restore
