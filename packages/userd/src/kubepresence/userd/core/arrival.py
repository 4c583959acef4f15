"""Waiting for the agents to arrive: what step the wait is at, and why it is stuck.

Theory of operation. `intercept` annotates the workload's pod template; the workload
replaces its pods (a bare ReplicaSet does not: userd deletes them, see `stale`), the
webhook injects the agent into each new pod, each agent registers with the manager and
accepts the intercept. userd polls the workload's pods and the intercept's state and asks
this module:

- `step`: one line for the CLI's spinner — "injecting the agent into 2 pods", "waiting for
  pod X to be Ready", "waiting for 1 old pod to go", "waiting for the agents to accept";
- `settled`: every live pod of the workload carries the agent and is Ready, its agent
  has reported to the manager (so the manager's "active" counts it), no pod is left
  without one, and there are as many as the workload wants: then traffic reaches only
  agents that accepted;
- `stuck`: when the wait times out, the reason the user can act on, most telling first:
  a container that cannot get its image (ErrImageNeverPull, ImagePullBackOff, …), new
  pods without the agent container (the webhook was not called), a container that keeps
  crashing, a pod that is not Ready (its failing conditions), or pods that do not come.

Pure: the shell (`k8s/agents.py`) turns API objects into `PodView`s.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

IMAGE_REASONS = frozenset(
    {"ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "InvalidImageName"}
)
CRASH_REASONS = frozenset({"CrashLoopBackOff", "CreateContainerConfigError", "RunContainerError"})


@dataclass(frozen=True)
class ContainerView:
    name: str
    image: str = ""
    ready: bool = False
    waiting_reason: str = ""
    waiting_message: str = ""
    init: bool = False


@dataclass(frozen=True)
class ConditionView:
    type: str
    status: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class PodView:
    name: str
    has_agent: bool
    ready: bool
    terminating: bool = False
    current: bool = True  # carries the template's injection annotations
    phase: str = "Pending"
    containers: tuple[ContainerView, ...] = ()
    conditions: tuple[ConditionView, ...] = ()


def _live(pods: Sequence[PodView]) -> list[PodView]:
    return [p for p in pods if not p.terminating]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def settled(
    pods: Sequence[PodView],
    replicas: int,
    agents: Collection[str] | None = None,
    routed: Collection[str] | None = None,
) -> bool:
    """All of the workload's traffic can only reach agents (see the module doc).

    `agents`: the pods whose agents the manager knows. An agent listens (its pod is
    Ready) a moment before it reports to the manager; until it has, the manager cannot
    count it among those that must accept the intercept.
    `routed`: the pods the intercepted Service routes to (None: no Service). A workload
    whose pods were replaced one by one (a bare ReplicaSet, a one-pod StatefulSet) has
    no endpoint at all until the Service has caught up with the new pod.
    """
    live = _live(pods)
    return (
        len(live) == replicas
        and all(p.has_agent and p.current and p.ready for p in live)
        and not any(not p.has_agent for p in pods)  # a terminating one may still serve
        and (agents is None or all(p.name in agents for p in live))
        and (routed is None or all(p.name in routed for p in live))
    )


def stale(pods: Sequence[PodView]) -> list[str]:
    """Live pods a bare ReplicaSet keeps although its template asks for the agent."""
    return sorted(p.name for p in _live(pods) if not (p.has_agent and p.current))


def passed_by_webhook(pods: Sequence[PodView]) -> list[str]:
    """Live pods made from the template that asks for the agent, but without one.

    The webhook fails open (a pod must never be refused because the manager is away), so
    a pod created while the API server could not reach it, such as in the second after
    the manager was installed, before kube-proxy routes its Service, comes up without
    the agent. Deleting it lets its workload create it again through the webhook.
    """
    return sorted(p.name for p in _live(pods) if p.current and not p.has_agent)


def step(
    pods: Sequence[PodView],
    replicas: int,
    intercept_message: str = "",
    agents: Collection[str] | None = None,
    routed: Collection[str] | None = None,
) -> str:
    """What the wait is at now, in one line."""
    live = _live(pods)
    without = [p for p in live if not (p.has_agent and p.current)]
    if without:
        return f"injecting the agent: {_plural(len(without), 'pod')} to replace"
    unready = sorted(p.name for p in live if not p.ready)
    if unready:
        return f"waiting for pod {unready[0]} to be Ready" + (
            f" (and {len(unready) - 1} more)" if len(unready) > 1 else ""
        )
    if len(live) < replicas:
        return f"waiting for {_plural(replicas - len(live), 'new pod')}"
    old = [p for p in pods if p.terminating and not p.has_agent]
    if old:
        return f"waiting for {_plural(len(old), 'old pod')} to go"
    unknown = _unknown(live, agents)
    if unknown:
        return f"waiting for the agent of pod {unknown[0]} to report to the traffic manager"
    unrouted = _unknown(live, routed)
    if unrouted:
        return f"waiting for the service to route to pod {unrouted[0]}"
    return (
        f"waiting for the agents to accept ({intercept_message})"
        if intercept_message
        else ("waiting for the agents to accept")
    )


def _unknown(live: Sequence[PodView], agents: Collection[str] | None) -> list[str]:
    return [] if agents is None else sorted(p.name for p in live if p.name not in agents)


def stuck(
    pods: Sequence[PodView],
    replicas: int,
    workload: str,
    agents: Collection[str] | None = None,
    routed: Collection[str] | None = None,
) -> str:
    """Why the agents have not arrived, for the timeout message (see the module doc)."""
    live = _live(pods)
    for pod in live:
        for container in pod.containers:
            if container.waiting_reason in IMAGE_REASONS:
                return (
                    f"pod {pod.name}: container {container.name} cannot get its image "
                    f"{container.image} ({container.waiting_reason}"
                    + (f": {container.waiting_message}" if container.waiting_message else "")
                    + ")"
                )
    new_without = [p.name for p in live if p.current and not p.has_agent]
    if new_without:
        return (
            f"the new pods of {workload} have no agent container ({', '.join(new_without)}): "
            "the agent-injection webhook was not called or let them pass (see the traffic "
            "manager's log and its MutatingWebhookConfiguration)"
        )
    for pod in live:
        for container in pod.containers:
            if container.waiting_reason in CRASH_REASONS:
                return (
                    f"pod {pod.name}: container {container.name} does not start "
                    f"({container.waiting_reason}"
                    + (f": {container.waiting_message}" if container.waiting_message else "")
                    + ")"
                )
    for pod in sorted(live, key=lambda p: p.name):
        if not pod.ready:
            failing = [
                f"{c.type}={c.status}" + (f" ({c.reason}: {c.message})" if c.reason else "")
                for c in pod.conditions
                if c.status != "True"
            ]
            return f"pod {pod.name} is not Ready ({pod.phase}): " + (
                "; ".join(failing) or "no condition says why"
            )
    if len(live) < replicas:
        return (
            f"{workload} has {len(live)} of {replicas} pods: new pods are not created "
            "(see `kubectl describe` of the workload and its events)"
        )
    old = [p.name for p in pods if p.terminating and not p.has_agent]
    if old:
        return f"old pods without the agent are still terminating: {', '.join(sorted(old))}"
    unknown = _unknown(live, agents)
    if unknown:
        return (
            f"the agents of {', '.join(unknown)} did not report to the traffic manager "
            f"(see `kubectl logs {unknown[0]} -c kubepresence-agent`)"
        )
    unrouted = _unknown(live, routed)
    if unrouted:
        return f"the service does not route to {', '.join(unrouted)} (see its EndpointSlices)"
    return "the agents did not accept the intercept"
