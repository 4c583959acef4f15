"""Intercept bookkeeping of the traffic manager.

An intercept belongs to one client session and names a port of one workload. It is
*global* (every request to that port goes to the client) or *personal* (only HTTP
requests that match its filter). At most one global intercept may hold a workload port,
and never next to personal ones; personal intercepts of different clients share a port
as long as their filters differ.

State follows the workload's agents: WAITING until every agent pod of the workload has
reviewed it (the agents learn of it through their watch), ACTIVE when all accepted,
ERROR when one refused (with its reason) or the workload was deleted, NO_AGENT when the
workload has no agent left.
New agent pods (a rollout, a scale-up) put it back to WAITING until they review it too.

Plain data and decisions: the rpc layer supplies ids, agents and reviews.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kubepresence.protocol.errors import NotFoundError, UserError
from kubepresence.protocol.httpfilter import HttpFilter, describe

WORKLOAD_DELETED = "workload deleted"


class InterceptState(enum.Enum):
    WAITING = "waiting"
    ACTIVE = "active"
    NO_AGENT = "no agent"
    ERROR = "error"


@dataclass(frozen=True)
class Target:
    """A workload port in the cluster."""

    namespace: str
    workload: str
    port: str  # the container port name or number the agent took over

    def __str__(self) -> str:
        return f"port {self.port} of {self.namespace}/{self.workload}"


@dataclass
class Intercept:
    id: str
    client: str
    name: str
    target: Target
    local_host: str
    local_port: int
    filter: HttpFilter | None  # None: global
    state: InterceptState = InterceptState.WAITING
    message: str = ""
    accepted_by: set[str] = field(default_factory=set)  # agent pods that reviewed it OK
    note: str = ""  # what an accepting agent wants its owner to know (shown while ACTIVE)

    @property
    def is_global(self) -> bool:
        return self.filter is None


class InterceptRegistry:
    def __init__(self) -> None:
        self._intercepts: dict[str, Intercept] = {}
        self._agents: dict[tuple[str, str], set[str]] = {}  # (namespace, workload) → pods

    @staticmethod
    def intercept_id(client: str, name: str) -> str:
        return f"{client}:{name}"

    def create(
        self,
        client: str,
        name: str,
        target: Target,
        local: tuple[str, int],
        http_filter: HttpFilter | None = None,
    ) -> Intercept:
        """Record a new intercept; UserError (one clear line) on every conflict."""
        intercept_id = self.intercept_id(client, name)
        if intercept_id in self._intercepts:
            raise UserError(f"you already have an intercept named {name!r}")
        for other in self._on(target):
            if other.is_global or http_filter is None:
                owner = "you" if other.client == client else "another client"
                kind = "a global" if other.is_global else "a personal"
                raise UserError(
                    f"{target} is already intercepted by {owner} ({kind} intercept "
                    f"{other.name!r}): a global intercept cannot share a port"
                )
            if other.filter == http_filter:
                raise UserError(
                    f"{target} already has a personal intercept with the same filter "
                    f"({describe(http_filter)}): choose another header value"
                )
        intercept = Intercept(intercept_id, client, name, target, *local, http_filter)
        self._intercepts[intercept_id] = intercept
        self._settle(intercept)
        return intercept

    def get(self, intercept_id: str) -> Intercept:
        try:
            return self._intercepts[intercept_id]
        except KeyError:
            raise NotFoundError(f"no intercept {intercept_id!r}") from None

    def remove(self, client: str, name: str) -> Intercept:
        intercept = self._intercepts.pop(self.intercept_id(client, name), None)
        if intercept is None:
            raise NotFoundError(f"you have no intercept named {name!r}")
        return intercept

    def drop_client(self, client: str) -> list[Intercept]:
        """A client session ended: its intercepts end with it."""
        gone = [i for i in self._intercepts.values() if i.client == client]
        for intercept in gone:
            del self._intercepts[intercept.id]
        return gone

    def agents_changed(self, namespace: str, workload: str, pods: set[str]) -> list[Intercept]:
        """The workload's agent pods are now `pods`; returns the intercepts whose state moved."""
        self._agents[(namespace, workload)] = set(pods)
        changed = []
        for intercept in self._intercepts.values():
            if (intercept.target.namespace, intercept.target.workload) != (namespace, workload):
                continue
            before = (intercept.state, intercept.message)
            intercept.accepted_by &= pods
            self._settle(intercept)
            if (intercept.state, intercept.message) != before:
                changed.append(intercept)
        return changed

    def workload_deleted(self, namespace: str, workload: str) -> list[Intercept]:
        """The workload is gone: its intercepts go to ERROR (until removed); returns them."""
        changed = []
        for intercept in self._intercepts.values():
            if (intercept.target.namespace, intercept.target.workload) != (namespace, workload):
                continue
            if (intercept.state, intercept.message) != (InterceptState.ERROR, WORKLOAD_DELETED):
                intercept.state, intercept.message = InterceptState.ERROR, WORKLOAD_DELETED
                changed.append(intercept)
        return changed

    def review(self, intercept_id: str, pod: str, accepted: bool, message: str = "") -> Intercept:
        """An agent pod accepted the intercept, or refused it with a reason."""
        intercept = self.get(intercept_id)
        pods = self._agents.get((intercept.target.namespace, intercept.target.workload), set())
        if pod not in pods:
            raise UserError(f"pod {pod!r} is not an agent of {intercept.target}")
        if accepted:
            intercept.accepted_by.add(pod)
            intercept.note = message or intercept.note
            self._settle(intercept)
        else:
            intercept.state = InterceptState.ERROR
            intercept.message = f"agent {pod}: {message or 'refused'}"
        return intercept

    def for_client(self, client: str) -> list[Intercept]:
        return sorted(
            (i for i in self._intercepts.values() if i.client == client), key=lambda i: i.name
        )

    def for_workload(self, namespace: str, workload: str) -> list[Intercept]:
        return sorted(
            (
                i
                for i in self._intercepts.values()
                if (i.target.namespace, i.target.workload) == (namespace, workload)
            ),
            key=lambda i: i.id,
        )

    def _on(self, target: Target) -> list[Intercept]:
        return [i for i in self._intercepts.values() if i.target == target]

    def _settle(self, intercept: Intercept) -> None:
        if intercept.state is InterceptState.ERROR:
            return  # an agent's refusal stands until the intercept is removed
        pods = self._agents.get((intercept.target.namespace, intercept.target.workload))
        if pods is None:
            intercept.state, intercept.message = InterceptState.WAITING, "waiting for agents"
        elif not pods:
            intercept.state, intercept.message = (
                InterceptState.NO_AGENT,
                f"{intercept.target.namespace}/{intercept.target.workload} has no agent",
            )
        elif pods <= intercept.accepted_by:
            intercept.state, intercept.message = InterceptState.ACTIVE, intercept.note
        else:
            waiting = len(pods - intercept.accepted_by)
            intercept.state = InterceptState.WAITING
            intercept.message = f"waiting for {waiting} of {len(pods)} agents to accept"
