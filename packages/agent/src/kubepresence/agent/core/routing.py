"""Which inbound connections an agent hands to a workstation.

An intercept names a port of the workload (the container port's name or number). The
agent accepts an intercept when it has taken that port over, refuses it otherwise with a
reason the user sees. A connection on a taken-over port goes to the workstation when a
global intercept of that port is active; otherwise it goes to the app, as always.
(Personal, HTTP-filtered intercepts route per request; they come with their own issue.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kubepresence.agent.core.config import PortTakeover


@dataclass(frozen=True)
class AgentIntercept:
    id: str
    port: str
    active: bool
    filtered: bool  # personal (HTTP filter): not routed by this agent yet


def takes_over(takeover: PortTakeover, port: str) -> bool:
    return port in (takeover.name, str(takeover.app_port))


def review(takeovers: Sequence[PortTakeover], intercept: AgentIntercept) -> tuple[bool, str]:
    """(accepted, reason) for an intercept seen on the agent's watch."""
    if intercept.filtered:
        return False, "HTTP-filtered (personal) intercepts are not supported by this agent yet"
    if any(takes_over(t, intercept.port) for t in takeovers):
        return True, ""
    offered = ", ".join(t.name or str(t.app_port) for t in takeovers) or "none"
    return False, f"the pod has no port {intercept.port!r} taken over (ports: {offered})"


class Routes:
    """The active global intercepts, by port."""

    def __init__(self) -> None:
        self._active: list[AgentIntercept] = []

    def update(self, intercepts: Iterable[AgentIntercept]) -> None:
        self._active = [i for i in intercepts if i.active and not i.filtered]

    def intercept_for(self, takeover: PortTakeover) -> str | None:
        for intercept in self._active:
            if takes_over(takeover, intercept.port):
                return intercept.id
        return None
