"""The two ends of an intercept's port, checked before anything is applied. Pure: no I/O.

The cluster end: which container port an intercept takes, `--port LOCAL[:PORT]` resolved
through a Service.

Theory of operation. The user names a *Service* port (name or number), as clients of the
workload know it. The agent takes over *container* ports, so userd resolves:

1. the Services of the namespace whose selector matches the pod template's labels (a
   Service without a selector selects nothing); `--service NAME` picks one of them, and
   must when several match;
2. the Service port: by name, or by number when PORT is all digits; with no PORT, the
   Service's only port;
3. its targetPort (Kubernetes defaults it to the port number):
   - a name → the app container's port of that name. The intercept names it: the webhook
     renames the app's port and the agent takes the name, so the Service reaches the agent
     without anything redirected;
   - a number → that number, whether or not the container declares it. Traffic arrives
     on the number itself, so only a redirect (an init container, iptables) can take it:
     the resolution says `numeric` and the manager asks the webhook for the redirect.

No Service selects the workload: PORT names the app container's port directly (name or
number; with no PORT, its only TCP port) and the intercept is numeric — without a Service,
callers dial the pod's port number, which only a redirect takes over. A note says so.

Intercepts take TCP ports only. Every failure is a UserError with one line that lists
what there is to choose from.

The shell (`k8s/resolving.py`) reads the workload and the Services.

The local end: whether a new intercept's local address is already another intercept's.

Two intercepts that send to one local port mix two workloads' traffic in one local
server, silently. That is refused unless the user asks for it (`--share-local-port`).
An intercept of the same workload port is not this rule's business: the manager refuses
that one itself ("already intercepted").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kubepresence.protocol.errors import UserError

TCP = "TCP"


@dataclass(frozen=True)
class ContainerPort:
    number: int
    name: str = ""
    protocol: str = TCP


@dataclass(frozen=True)
class ServicePort:
    number: int
    name: str = ""
    target: str | int | None = None  # None: the same number as the port
    protocol: str = TCP

    def describe(self) -> str:
        return f"{self.name}/{self.number}" if self.name else str(self.number)


@dataclass(frozen=True)
class Service:
    name: str
    selector: Mapping[str, str]
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True)
class Workload:
    """What the resolution needs of a workload: its pod labels and app container."""

    kind: str
    name: str
    labels: Mapping[str, str]
    container: str
    ports: tuple[ContainerPort, ...]


@dataclass(frozen=True)
class Resolved:
    """The container port the intercept takes, and how the user's PORT led to it."""

    port: str  # what the manager and the agent know: a container port name or number
    numeric: bool  # traffic arrives on the number: the port must be redirected to the agent
    service: str = ""  # "" when no Service selects the workload
    service_port: str = ""  # the Service port, as `name/number`
    note: str = ""  # something the user should know (e.g. no Service)


def selecting(services: Iterable[Service], labels: Mapping[str, str]) -> list[Service]:
    """The Services whose selector matches `labels`, by name."""
    found = [
        s for s in services if s.selector and all(labels.get(k) == v for k, v in s.selector.items())
    ]
    return sorted(found, key=lambda s: s.name)


def resolve(
    workload: Workload, services: Iterable[Service], port: str, service: str = ""
) -> Resolved:
    """Resolve the user's PORT ("" when not given) for `workload` (see the module doc)."""
    matching = selecting(services, workload.labels)
    title = f"{workload.kind.lower()}/{workload.name}"
    if service:
        chosen = [s for s in matching if s.name == service]
        if not chosen:
            raise UserError(
                f"service {service!r} does not select the pods of {title} "
                f"(services that do: {_names(matching)})"
            )
        return _through_service(workload, chosen[0], port)
    if len(matching) > 1:
        raise UserError(
            f"several services select the pods of {title}: {_names(matching)}; "
            "choose one with --service"
        )
    if matching:
        return _through_service(workload, matching[0], port)
    return _without_service(workload, port, title)


def _names(services: Sequence[Service]) -> str:
    return ", ".join(s.name for s in services) or "none"


def _container_ports(workload: Workload) -> str:
    return (
        ", ".join(
            f"{p.name}/{p.number}" if p.name else str(p.number)
            for p in workload.ports
            if p.protocol == TCP
        )
        or "none"
    )


def _through_service(workload: Workload, service: Service, port: str) -> Resolved:
    listed = ", ".join(p.describe() for p in service.ports) or "none"
    if not port:
        if len(service.ports) != 1:
            raise UserError(
                f"service {service.name} has {len(service.ports)} ports ({listed}): "
                "name one with --port LOCAL:PORT"
            )
        chosen = service.ports[0]
    else:
        by = (lambda p: str(p.number) == port) if port.isdigit() else (lambda p: p.name == port)
        found = [p for p in service.ports if by(p)]
        if not found:
            raise UserError(f"service {service.name} has no port {port!r} (ports: {listed})")
        chosen = found[0]
    if chosen.protocol != TCP:
        raise UserError(
            f"service {service.name} port {chosen.describe()} is {chosen.protocol}: "
            "intercepts take TCP ports only"
        )
    target = chosen.number if chosen.target is None else chosen.target
    if isinstance(target, str) and target.isdigit():
        target = int(target)  # an IntOrString that arrived as text
    common = {"service": service.name, "service_port": chosen.describe()}
    if isinstance(target, int):
        return Resolved(port=str(target), numeric=True, **common)
    named = [p for p in workload.ports if p.name == target]
    if not named:
        raise UserError(
            f"service {service.name} port {chosen.describe()} targets the container port "
            f"{target!r}, which container {workload.container} does not declare "
            f"(ports: {_container_ports(workload)})"
        )
    if named[0].protocol != TCP:
        raise UserError(
            f"container port {target} of {workload.container} is {named[0].protocol}: "
            "intercepts take TCP ports only"
        )
    return Resolved(port=target, numeric=False, **common)


def _without_service(workload: Workload, port: str, title: str) -> Resolved:
    tcp = [p for p in workload.ports if p.protocol == TCP]
    note = f"no service selects the pods of {title}: intercepting the container port"
    if not port:
        if len(tcp) != 1:
            raise UserError(
                f"no service selects the pods of {title} and container {workload.container} "
                f"has {len(tcp)} TCP ports ({_container_ports(workload)}): "
                "name one with --port LOCAL:PORT"
            )
        return Resolved(port=str(tcp[0].number), numeric=True, note=f"{note} {tcp[0].number}")
    if port.isdigit():
        number = int(port)
        if not 0 < number < 65536:
            raise UserError(f"port {port} is out of range (1-65535)")
        declared = [p for p in workload.ports if p.number == number]
        if declared and declared[0].protocol != TCP:
            raise UserError(
                f"container port {number} of {workload.container} is "
                f"{declared[0].protocol}: intercepts take TCP ports only"
            )
        return Resolved(port=str(number), numeric=True, note=f"{note} {number}")
    named = [p for p in tcp if p.name == port]
    if not named:
        raise UserError(
            f"no service selects the pods of {title} and container {workload.container} "
            f"has no TCP port {port!r} (ports: {_container_ports(workload)})"
        )
    return Resolved(
        port=str(named[0].number), numeric=True, note=f"{note} {port} ({named[0].number})"
    )


ANY_ADDRESSES = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - compared, never bound


@dataclass(frozen=True)
class LocalTarget:
    """Where one intercept sends its traffic on the workstation."""

    name: str
    namespace: str
    workload: str
    port: str  # the service port it takes
    host: str
    local_port: int


def _same_address(a: str, b: str) -> bool:
    return a == b or a in ANY_ADDRESSES or b in ANY_ADDRESSES


def conflict(existing: Iterable[LocalTarget], new: LocalTarget) -> str | None:
    """Why `new` may not send to its local port, or None."""
    for other in existing:
        if (other.namespace, other.workload, other.port) == (new.namespace, new.workload, new.port):
            continue
        if other.local_port == new.local_port and _same_address(other.host, new.host):
            return (
                f"local port {new.local_port} already receives intercept {other.name!r}"
                f" ({other.namespace}/{other.workload}): pick another local port, or pass"
                " --share-local-port to send both there"
            )
    return None
