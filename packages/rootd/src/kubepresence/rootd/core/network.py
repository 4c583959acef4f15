"""What a Connect asks for, checked and turned into a plan for the VIF. Sans-IO.

userd hands rootd the cluster's subnets, its DNS service address and domain, the user's
`--also-proxy`/`--never-proxy`, the routing options (`--allow-conflicting-subnets`,
`--vnat`, `--proxy-via`, `--virtual-subnet`, the DNS flags) and the namespaces for the
search list. `plan` validates all of it (one clear line per mistake, `PlanError`) and
computes what the VIF routes:

* the cluster's subnets plus also-proxy, minus never-proxy and minus the translated
  ranges (`--vnat`, `--proxy-via`: reached through virtual addresses instead);
* the virtual subnet, when anything is translated;
* the DNS address is the cluster's DNS service address when a routed subnet covers it,
  else the virtual subnet's first address (rootd answers DNS itself either way);
* routed subnets that overlap an `--allow-conflicting-subnets` range go into a routing
  table of their own, chosen by a policy rule per subnet ahead of the main table, so they
  win over the local route they overlap (which is left as it is).

`local_routes` reads `ip -j route` output and `plan_conflict` names what would shadow (or
be shadowed by) a route the machine already has, in one line with the ways out: such a
subnet is refused, never silently taken over, unless the overlap is inside an allowed range.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubepresence.protocol.routing import DEFAULT_VIRTUAL_SUBNET, RoutingOptions
from kubepresence.rootd.core.resolvconf import valid_namespace
from kubepresence.rootd.core.subnets import (
    Conflict,
    Network,
    conflicts,
    parse_cidrs,
    routed_subnets,
)
from kubepresence.rootd.core.vnat import Translated

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
    manager_socket: str = ""
    routing: RoutingOptions = field(default_factory=RoutingOptions)


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    """What the VIF brings up for a request."""

    routed: tuple[Network, ...]  # the subnets the user asked to reach
    routes: tuple[Network, ...]  # what goes into the main table (routed + DNS if needed)
    dns_address: Address  # where the workstation asks (virtual when DNS is translated)
    cluster_domain: str
    search_namespaces: tuple[str, ...]
    connector_socket: str
    manager_socket: str
    session_id: str
    # Routed subnets taken over from a local route: a table of their own + a policy rule.
    policy_routes: tuple[Network, ...] = ()
    allowed: tuple[Network, ...] = ()  # the --allow-conflicting-subnets ranges
    virtual_subnet: Network | None = None  # routed when anything is translated
    translated: tuple[Translated, ...] = ()
    cluster_dns_address: Address | None = None  # the DNS service's own address
    routing: RoutingOptions = field(default_factory=RoutingOptions)

    @property
    def all_routes(self) -> tuple[Network, ...]:
        return (*self.routes, *self.policy_routes)


def plan(request: NetworkRequest) -> NetworkPlan:
    """Check `request` and compute the plan; PlanError names the first mistake."""
    options = request.routing
    try:
        cluster = [
            *parse_cidrs(request.pod_subnets, "pod subnets"),
            *parse_cidrs(request.service_subnets, "service subnets"),
        ]
        also = parse_cidrs(request.also_proxy, "--also-proxy")
        never = parse_cidrs(request.never_proxy, "--never-proxy")
        allowed = parse_cidrs(options.allow_conflicting, "--allow-conflicting-subnets")
        vnat = parse_cidrs(options.vnat, "--vnat")
        via = parse_cidrs((p.cidr for p in options.proxy_via), "--proxy-via")
        virtual = parse_cidrs(
            [options.virtual_subnet or DEFAULT_VIRTUAL_SUBNET], "--virtual-subnet"
        )[0]
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
    if not request.manager_socket:
        raise PlanError("no manager socket: rootd cannot reach the traffic manager")
    translated = [
        *(Translated(cidr) for cidr in vnat),
        *(Translated(cidr, p.workload_ref) for cidr, p in zip(via, options.proxy_via, strict=True)),
    ]
    routed = routed_subnets(cluster, also, [*never, *(t.cidr for t in translated)])
    if not routed and not translated:
        raise PlanError("nothing to route: the cluster subnets are all excluded by --never-proxy")
    for allowed_range in allowed:
        if not any(allowed_range.overlaps(subnet) for subnet in routed):
            raise PlanError(
                f"--allow-conflicting-subnets {allowed_range} is in no routed subnet "
                f"({', '.join(str(s) for s in routed) or 'none'})"
            )
    virtual_subnet: Network | None = None
    cluster_dns: Address | None = None
    if translated:
        _check_virtual_subnet(virtual, routed, translated)
        virtual_subnet = virtual
    taken_over = [s for s in routed if any(s.overlaps(a) for a in allowed)]
    routes: list[Network] = [s for s in routed if s not in taken_over]
    policy_routes: list[Network] = list(taken_over)
    if virtual_subnet is not None:
        routes.append(virtual_subnet)
    if not any(dns_address in subnet for subnet in routed):
        # rootd answers DNS itself, so the workstation may ask any address: when the
        # service's own is not routed (translated, or left to a local route by
        # --never-proxy), it asks the virtual subnet's first address instead of taking
        # one address of someone else's range.
        cluster_dns = dns_address
        dns_address = virtual.network_address + 1
        if virtual_subnet is None:
            routes.append(ipaddress.ip_network(dns_address))
    return NetworkPlan(
        routed=tuple(routed),
        routes=tuple(routes),
        dns_address=dns_address,
        cluster_domain=domain,
        search_namespaces=tuple(dict.fromkeys(request.search_namespaces)),
        connector_socket=request.connector_socket,
        manager_socket=request.manager_socket,
        session_id=request.session_id,
        policy_routes=tuple(policy_routes),
        allowed=tuple(allowed),
        virtual_subnet=virtual_subnet,
        translated=tuple(translated),
        cluster_dns_address=cluster_dns,
        routing=options,
    )


def _check_virtual_subnet(
    virtual: Network, routed: Sequence[Network], translated: Sequence[Translated]
) -> None:
    if virtual.num_addresses < 4:
        raise PlanError(f"--virtual-subnet {virtual} is too small (at least a /30)")
    for rule in translated:
        if rule.cidr.version != virtual.version:
            raise PlanError(
                f"--virtual-subnet {virtual} and {rule.cidr} are not the same IP version"
            )
        if rule.cidr.overlaps(virtual):
            raise PlanError(f"--virtual-subnet {virtual} overlaps the translated range {rule.cidr}")
    for subnet in routed:
        if subnet.version == virtual.version and subnet.overlaps(virtual):
            raise PlanError(
                f"--virtual-subnet {virtual} overlaps the routed subnet {subnet}: "
                "choose another with --virtual-subnet"
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


def virtual_subnet_conflict(plan: NetworkPlan, local: Sequence[tuple[Network, str]]) -> str | None:
    """The local route the virtual subnet would collide with, in one line, or None."""
    virtual = plan.virtual_subnet
    if virtual is None:
        return None
    for route, device in local:
        if route.prefixlen and route.version == virtual.version and route.overlaps(virtual):
            return (
                f"the virtual subnet {virtual} overlaps the local route {route} via "
                f"{device}: choose another with --virtual-subnet"
            )
    return None


def plan_conflict(plan: NetworkPlan, local: Sequence[tuple[Network, str]]) -> str | None:
    """What in `plan` would collide with the machine's routes, in one line, or None.

    A routed subnet in the policy table may overlap a local route only inside an allowed
    range."""
    found = conflicts(plan.routes, local)
    for conflict in conflicts(plan.policy_routes, local):
        overlap = (
            conflict.route
            if conflict.route.prefixlen >= conflict.subnet.prefixlen
            else conflict.subnet
        )
        if not any(
            overlap.version == a.version and overlap.subnet_of(a)  # type: ignore[arg-type]
            for a in plan.allowed
        ):
            found.append(conflict)
    return describe_conflicts(found)


def describe_conflicts(found: Sequence[Conflict]) -> str | None:
    if not found:
        return None
    line = str(found[0])
    if len(found) > 1:
        line += f" (and {len(found) - 1} more conflict{'s' if len(found) > 2 else ''})"
    return line
