"""What a Connect asks for, checked and turned into a plan for the VIF. Sans-IO.

userd hands rootd the cluster's subnets, its DNS service address and domain, the user's
`--also-proxy`/`--never-proxy` and the namespaces for the search list. `plan` validates all
of it (one clear line per mistake, `PlanError`) and computes what the VIF routes: the
cluster's subnets plus also-proxy minus never-proxy (`subnets.routed_subnets`), plus the DNS
address when no routed subnet covers it. `local_routes` reads `ip -j route` output and
`route_conflict` names the first routed subnet that would shadow (or be shadowed by) a route
the machine already has: such a subnet is refused, never silently taken over.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kubepresence.rootd.core.resolvconf import valid_namespace
from kubepresence.rootd.core.subnets import Network, conflicts, parse_cidrs, routed_subnets

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# Routes that name single addresses of the link layer, not a destination we would shadow.
_IGNORED_ROUTE_TYPES = frozenset({"broadcast", "multicast", "anycast", "nat"})


class PlanError(ValueError):
    """The request cannot be applied; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class NetworkRequest:
    """A Connect, in rootd's own terms (rpc/ translates the protocol message)."""

    session_id: str
    pod_subnets: Sequence[str]
    service_subnets: Sequence[str]
    cluster_domain: str
    dns_service_ip: str
    also_proxy: Sequence[str] = ()
    never_proxy: Sequence[str] = ()
    search_namespaces: Sequence[str] = ()
    connector_socket: str = ""


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    """What the VIF brings up for a request."""

    routed: tuple[Network, ...]  # the subnets the user asked to reach
    routes: tuple[Network, ...]  # what goes into the routing table (routed + DNS if needed)
    dns_address: Address
    cluster_domain: str
    search_namespaces: tuple[str, ...]
    connector_socket: str
    session_id: str


def plan(request: NetworkRequest) -> NetworkPlan:
    """Check `request` and compute the plan; PlanError names the first mistake."""
    try:
        cluster = [
            *parse_cidrs(request.pod_subnets, "pod subnets"),
            *parse_cidrs(request.service_subnets, "service subnets"),
        ]
        also = parse_cidrs(request.also_proxy, "--also-proxy")
        never = parse_cidrs(request.never_proxy, "--never-proxy")
    except ValueError as error:
        raise PlanError(str(error)) from None
    try:
        dns_address = ipaddress.ip_address(request.dns_service_ip.strip())
    except ValueError:
        raise PlanError(
            f"the cluster DNS address {request.dns_service_ip!r} is not an IP address"
        ) from None
    domain = request.cluster_domain.strip().strip(".").lower()
    if not domain or not all(valid_namespace(label) for label in domain.split(".")):
        raise PlanError(f"the cluster domain {request.cluster_domain!r} is not a DNS name")
    bad = [ns for ns in request.search_namespaces if not valid_namespace(ns)]
    if bad:
        raise PlanError(f"{bad[0]!r} is not a namespace name")
    if not request.connector_socket:
        raise PlanError("no connector socket: rootd cannot reach userd")
    routed = routed_subnets(cluster, also, never)
    if not routed:
        raise PlanError("nothing to route: the cluster subnets are all excluded by --never-proxy")
    routes = list(routed)
    if not any(dns_address in subnet for subnet in routed):
        routes.append(ipaddress.ip_network(dns_address))
    return NetworkPlan(
        routed=tuple(routed),
        routes=tuple(routes),
        dns_address=dns_address,
        cluster_domain=domain,
        search_namespaces=tuple(dict.fromkeys(request.search_namespaces)),
        connector_socket=request.connector_socket,
        session_id=request.session_id,
    )


def local_routes(entries: Iterable[dict[str, Any]], own_device: str) -> list[tuple[Network, str]]:
    """The machine's routes from `ip -j route show table all` (each entry a JSON object).

    Default routes, link-layer entries (broadcast, multicast) and routes through our own
    device (a leftover we are about to replace) are left out.
    """
    routes: list[tuple[Network, str]] = []
    for entry in entries:
        destination = str(entry.get("dst", ""))
        device = str(entry.get("dev", "") or entry.get("type", "?"))
        if not destination or destination == "default" or device == own_device:
            continue
        if entry.get("type") in _IGNORED_ROUTE_TYPES:
            continue
        try:
            network = ipaddress.ip_network(destination, strict=False)
        except ValueError:
            continue  # an entry `ip` prints that is no plain destination (e.g. a rule name)
        table = entry.get("table")
        routes.append((network, f"{device} (table {table})" if table else device))
    return routes


def route_conflict(routes: Sequence[Network], local: Sequence[tuple[Network, str]]) -> str | None:
    """One line naming the conflicts between planned routes and local ones, or None."""
    found = conflicts(routes, local)
    if not found:
        return None
    line = str(found[0])
    if len(found) > 1:
        line += f" (and {len(found) - 1} more conflict{'s' if len(found) > 2 else ''})"
    return line
