"""Waiting for agents: the step shown while waiting, when it is done, why it is stuck."""

from __future__ import annotations

from kubepresence.userd.core.arrival import (
    ConditionView,
    ContainerView,
    PodView,
    passed_by_webhook,
    settled,
    stale,
    step,
    stuck,
)

READY = PodView("echo-a", has_agent=True, ready=True, phase="Running")
OLD = PodView("echo-old", has_agent=False, ready=True, phase="Running")


def test_settled_needs_every_live_pod_with_the_agent_and_ready() -> None:
    assert settled([READY], 1)
    assert settled([READY, PodView("echo-b", True, True)], 2)
    assert not settled([READY], 2)  # one pod still to come
    assert not settled([READY, OLD], 2)
    assert not settled([READY, PodView("echo-b", True, ready=False)], 2)
    # an old pod on its way out may still serve: not yet
    assert not settled([READY, PodView("echo-old", False, True, terminating=True)], 1)
    # a terminating pod with the agent does not hold it up
    assert settled([READY, PodView("echo-x", True, False, terminating=True)], 1)
    # an agent pod from before a change of the injection annotations (e.g. a new redirect)
    assert not settled([PodView("echo-a", True, True, current=False)], 1)


def test_stale_pods_are_the_live_ones_without_a_current_agent() -> None:
    pods = [
        READY,
        OLD,
        PodView("echo-b", True, True, current=False),
        PodView("echo-c", False, True, terminating=True),
    ]
    assert stale(pods) == ["echo-b", "echo-old"]


def test_pods_the_webhook_let_pass_are_current_live_and_without_the_agent() -> None:
    pods = [
        READY,
        PodView("echo-new", has_agent=False, ready=True),  # current template, no agent
        PodView("echo-old", has_agent=False, ready=True, current=False),  # the rollout's
        PodView("echo-gone", has_agent=False, ready=False, terminating=True),
        PodView("echo-b", has_agent=True, ready=False),
    ]
    assert passed_by_webhook(pods) == ["echo-new"]
    assert passed_by_webhook([READY]) == []


def test_steps_follow_the_arrival() -> None:
    assert step([OLD, PodView("echo-o2", False, True)], 2) == (
        "injecting the agent: 2 pods to replace"
    )
    assert step([READY, PodView("echo-b", True, False)], 2) == "waiting for pod echo-b to be Ready"
    assert step([PodView("echo-b", True, False), PodView("echo-c", True, False)], 2) == (
        "waiting for pod echo-b to be Ready (and 1 more)"
    )
    assert step([READY], 2) == "waiting for 1 new pod"
    assert step([READY, PodView("echo-o", False, True, terminating=True)], 1) == (
        "waiting for 1 old pod to go"
    )
    assert step([READY], 1, "waiting for 1 of 1 agents to accept") == (
        "waiting for the agents to accept (waiting for 1 of 1 agents to accept)"
    )


def image_pod(reason: str) -> PodView:
    return PodView(
        "echo-a",
        has_agent=True,
        ready=False,
        containers=(
            ContainerView("echo", "testapps:1", ready=True),
            ContainerView(
                "kubepresence-agent",
                "kubepresence-agent:dev",
                waiting_reason=reason,
                waiting_message='Container image "kubepresence-agent:dev" is not present',
            ),
        ),
    )


def test_stuck_on_an_image_that_cannot_be_had() -> None:
    for reason in ("ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull"):
        assert stuck([image_pod(reason), OLD], 1, "ns/echo") == (
            "pod echo-a: container kubepresence-agent cannot get its image "
            f"kubepresence-agent:dev ({reason}: Container image "
            '"kubepresence-agent:dev" is not present)'
        )


def test_stuck_because_the_webhook_was_not_called() -> None:
    new = PodView("echo-new", has_agent=False, ready=True, current=True)
    assert stuck([new], 1, "ns/echo").startswith(
        "the new pods of ns/echo have no agent container (echo-new): the agent-injection "
        "webhook was not called"
    )


def test_stuck_on_a_crashing_container() -> None:
    pod = PodView(
        "echo-a",
        True,
        False,
        containers=(
            ContainerView("kubepresence-init", waiting_reason="CrashLoopBackOff", init=True),
        ),
    )
    assert stuck([pod], 1, "ns/echo") == (
        "pod echo-a: container kubepresence-init does not start (CrashLoopBackOff)"
    )


def test_stuck_on_a_pod_that_is_not_ready_says_which_conditions_fail() -> None:
    pod = PodView(
        "echo-a",
        True,
        False,
        phase="Running",
        conditions=(
            ConditionView("PodScheduled", "True"),
            ConditionView(
                "Ready", "False", "ContainersNotReady", "containers with unready status: [echo]"
            ),
            ConditionView("ContainersReady", "False"),
        ),
    )
    assert stuck([pod], 1, "ns/echo") == (
        "pod echo-a is not Ready (Running): Ready=False (ContainersNotReady: containers with "
        "unready status: [echo]); ContainersReady=False"
    )
    assert stuck([PodView("echo-b", True, False)], 1, "ns/echo") == (
        "pod echo-b is not Ready (Pending): no condition says why"
    )


def test_stuck_without_pods_or_with_old_ones_left() -> None:
    assert stuck([], 2, "ns/echo").startswith("ns/echo has 0 of 2 pods")
    gone = PodView("echo-o", False, True, terminating=True)
    assert stuck([READY, gone], 1, "ns/echo") == (
        "old pods without the agent are still terminating: echo-o"
    )
    assert stuck([READY], 1, "ns/echo") == "the agents did not accept the intercept"


def test_image_reasons_come_before_the_missing_agent() -> None:
    assert "cannot get its image" in stuck(
        [PodView("echo-new", False, False), image_pod("ErrImageNeverPull")], 2, "ns/echo"
    )


def test_an_agent_that_has_not_reported_holds_the_wait() -> None:
    pods = [READY, PodView("echo-b", True, True)]
    assert not settled(pods, 2, {"echo-a"})  # Ready, but the manager does not know echo-b
    assert settled(pods, 2, {"echo-a", "echo-b", "echo-gone"})
    assert step(pods, 2, "", {"echo-a"}) == (
        "waiting for the agent of pod echo-b to report to the traffic manager"
    )
    assert stuck(pods, 2, "ns/echo", {"echo-a"}) == (
        "the agents of echo-b did not report to the traffic manager "
        "(see `kubectl logs echo-b -c kubepresence-agent`)"
    )


def test_a_service_that_does_not_route_to_the_new_pod_holds_the_wait() -> None:
    pods = [READY]
    assert not settled(pods, 1, {"echo-a"}, set())  # the only pod was replaced just now
    assert settled(pods, 1, {"echo-a"}, {"echo-a"})
    assert settled(pods, 1, {"echo-a"}, None)  # no Service
    assert step(pods, 1, "", {"echo-a"}, {"echo-old"}) == (
        "waiting for the service to route to pod echo-a"
    )
    assert stuck(pods, 1, "ns/echo", {"echo-a"}, set()) == (
        "the service does not route to echo-a (see its EndpointSlices)"
    )
