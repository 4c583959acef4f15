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

`decide` puts these together into the loop's one decision. The shell (`engaging.py`) takes
a `Snapshot` (the pods, the intercept's state at the manager, what the shell has done so
far: pods replaced, webhook rounds, the agents and endpoints it last asked for) and does
the one `Action` it gets back:

- `Replace` pods the workload will not replace by itself (a bare ReplicaSet or an OnDelete
  StatefulSet: `stale`), or that the webhook let pass without the agent (`passed_by_webhook`,
  at most `WEBHOOK_RETRIES` rounds; the next round is `Stuck` and the template goes back);
- `Confirm`: the pods look settled and the intercept is active: ask the manager which
  agents it knows and the Service which pods it routes to, and decide again with those;
- `Wait` for the next change, showing `step`;
- `Done`: settled, with every agent known and routed to;
- `Stuck`: the intercept failed at the manager, the webhook does not inject, or the wait
  timed out (`Snapshot.timed_out`): the user's one line.

Pure: the shell (`k8s/agents.py`) turns API objects into `PodView`s.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

IMAGE_REASONS = frozenset(
    {"ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "InvalidImageName"}
)
CRASH_REASONS = frozenset({"CrashLoopBackOff", "CreateContainerConfigError", "RunContainerError"})
WEBHOOK_RETRIES = 3  # rounds of re-creating pods the webhook let pass without the agent


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


@dataclass(frozen=True)
class Snapshot:
    """What the arrival loop knows now: the cluster's side and what the shell has done."""

    intercept: str  # the intercept's name, for messages
    workload: str  # "namespace/name", for messages
    wait: float  # the whole wait's length in seconds, for the timeout message
    state: str = "waiting"  # the intercept's at the manager: waiting, active, error …
    message: str = ""  # the intercept's message at the manager
    pods: tuple[PodView, ...] = ()
    replicas: int = 0
    replaces_pods: bool = True  # a template change rolls its pods (a bare ReplicaSet: no)
    replaced: frozenset[str] = frozenset()  # pods the shell deleted so far
    webhook_rounds: int = 0  # rounds of replacing pods the webhook let pass
    agents: frozenset[str] | None = None  # pods whose agents the manager knows (last asked)
    routed: frozenset[str] | None = None  # pods the Service routes to (None: no Service)
    confirmed: bool = False  # `agents` and `routed` were asked for these pods
    timed_out: bool = False


@dataclass(frozen=True)
class Replace:
    """Delete these pods so that their workload makes them again (through the webhook)."""

    pods: tuple[str, ...]
    webhook: bool  # a round of pods the webhook let pass (counts toward WEBHOOK_RETRIES)
    step: str  # what the wait is at, for the spinner


@dataclass(frozen=True)
class Confirm:
    """Ask which agents the manager knows and where the Service routes, then decide again."""


@dataclass(frozen=True)
class Wait:
    """Nothing to do but wait for the next change."""

    step: str


@dataclass(frozen=True)
class Done:
    """Every pod has its agent, known to the manager and routed to: traffic reaches us."""


@dataclass(frozen=True)
class Stuck:
    """The intercept cannot become active: `message` is the user's line. With `restore`,
    the pod template goes back first (the annotations asked for agents that do not come);
    `restore` is then why."""

    message: str
    restore: str = ""


Action = Replace | Confirm | Wait | Done | Stuck


def decide(now: Snapshot) -> Action:
    """The arrival loop's next action (see the module doc)."""
    if now.timed_out:
        return Stuck(timeout_message(now))
    if now.state == "error":
        return Stuck(f"intercept {now.intercept}: {now.message}")
    if not now.replaces_pods:
        # The template change does not roll these pods: replace them.
        todo = tuple(p for p in stale(now.pods) if p not in now.replaced)
        if todo:
            return Replace(todo, webhook=False, step=_now_step(now))
    elif missed := tuple(p for p in passed_by_webhook(now.pods) if p not in now.replaced):
        if now.webhook_rounds >= WEBHOOK_RETRIES:
            # Not a moment's gap: the webhook is not reached (or skips them).
            why = stuck(now.pods, now.replicas, now.workload, now.agents, now.routed)
            failure = (
                f"intercept {now.intercept}: the traffic manager's webhook did not inject the "
                f"agent ({WEBHOOK_RETRIES + 1} tries): {why}"
            )
            return Stuck(f"{failure}; the pod template was put back", restore=failure)
        return Replace(missed, webhook=True, step=_now_step(now))
    # Active: every agent the manager knows accepted. Settled: no pod without one is left.
    if now.state == "active" and settled(now.pods, now.replicas):
        if not now.confirmed:
            return Confirm()  # active counts the agents the manager knows: all of them?
        if settled(now.pods, now.replicas, now.agents, now.routed):
            return Done()
    return Wait(_now_step(now))


def timeout_message(now: Snapshot) -> str:
    """The line for a wait that ran out: what it was stuck at."""
    why = stuck(now.pods, now.replicas, now.workload, now.agents, now.routed)
    if now.state != "active" and why.startswith("the agents did not accept"):
        why = f"{why} ({now.message or now.state})"
    return f"intercept {now.intercept}: the agents did not arrive in {now.wait:.0f} s: {why}"


def _now_step(now: Snapshot) -> str:
    message = "" if now.state == "active" else now.message
    return step(now.pods, now.replicas, message, now.agents, now.routed)
