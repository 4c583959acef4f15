"""Which inbound connections and requests an agent hands to a workstation.

An intercept names a port of the workload (the container port's name or number). The
agent accepts an intercept when it has taken that port over, refuses it otherwise with a
reason the user sees. On a taken-over port:
- a *global* intercept, when active, takes every connection;
- *personal* intercepts (HTTP filters), when active, take the requests that match their
  filter, one request at a time; every other request, and every connection that does
  not speak HTTP, goes to the app;
- with neither, everything goes to the app, as always.
The manager never lets a global intercept share a port with personal ones; should both
show up at once (a race in the watch), the global one wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kubepresence.protocol.agents import PortTakeover
from kubepresence.protocol.httpfilter import HttpFilter, matches


@dataclass(frozen=True)
class AgentIntercept:
    id: str
    port: str
    active: bool
    http_filter: HttpFilter | None = None  # None: global
    client: str = ""  # the owning client's session
    workstation: tuple[str, int] = ("", 0)  # where the client delivers its connections


@dataclass(frozen=True)
class Personal:
    """The active personal intercepts of one port, in a stable order."""

    intercepts: tuple[tuple[str, HttpFilter], ...]


def takes_over(takeover: PortTakeover, port: str) -> bool:
    return port in (takeover.name, str(takeover.app_port))


def review(
    takeovers: Sequence[PortTakeover],
    intercept: AgentIntercept,
    accepted: Iterable[AgentIntercept] = (),
) -> tuple[bool, str]:
    """(accepted, reason) for an intercept seen on the agent's watch.

    `accepted`: the intercepts this agent took before. The manager compares ports as
    written, so `8080` and `http` for the same container port reach the agent as two
    intercepts; here they are one port, and the rules of the manager apply again."""
    takeover = next((t for t in takeovers if takes_over(t, intercept.port)), None)
    if takeover is None:
        offered = ", ".join(t.name or str(t.app_port) for t in takeovers) or "none"
        return False, f"the pod has no port {intercept.port!r} taken over (ports: {offered})"
    for other in accepted:
        if other.id == intercept.id or not takes_over(takeover, other.port):
            continue
        if other.http_filter is None or intercept.http_filter is None:
            return False, (
                f"port {intercept.port} is port {other.port} of the app, already intercepted "
                f"({other.id}): a global intercept cannot share a port"
            )
        if other.http_filter == intercept.http_filter:
            return False, (
                f"port {intercept.port} is port {other.port} of the app, already intercepted "
                f"with the same filter ({other.id})"
            )
    return True, ""


class Routes:
    """The active intercepts, by port."""

    def __init__(self) -> None:
        self._active: list[AgentIntercept] = []

    def update(self, intercepts: Iterable[AgentIntercept]) -> None:
        self._active = sorted((i for i in intercepts if i.active), key=lambda i: i.id)

    def intercept(self, intercept_id: str) -> AgentIntercept | None:
        """The active intercept of that id, if any."""
        return next((i for i in self._active if i.id == intercept_id), None)

    def intercept_for(self, takeover: PortTakeover) -> str | None:
        """The global intercept that takes every connection of this port, if any."""
        for intercept in self._active:
            if intercept.http_filter is None and takes_over(takeover, intercept.port):
                return intercept.id
        return None

    def personal_for(self, takeover: PortTakeover) -> Personal | None:
        """The personal intercepts of this port, when it has no global one."""
        if self.intercept_for(takeover) is not None:
            return None
        found = tuple(
            (i.id, i.http_filter)
            for i in self._active
            if i.http_filter is not None and takes_over(takeover, i.port)
        )
        return Personal(found) if found else None

    def choose(
        self, takeover: PortTakeover, method: str, target: str, headers: Iterable[tuple[str, str]]
    ) -> str | None:
        """The personal intercept that takes this request, now; None: the app's.

        Asked again for every request, so a keep-alive connection follows intercepts
        that end or begin while it is open.
        """
        personal = self.personal_for(takeover)
        if personal is None:
            return None
        listed = list(headers)
        for intercept_id, http_filter in personal.intercepts:
            if matches(http_filter, method, target, listed):
                return intercept_id
        return None
