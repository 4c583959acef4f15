"""Which subnets the VIF routes.

The cluster's pod and service subnets, plus `--also-proxy`, minus `--never-proxy`. An
excluded range inside a routed subnet splits it into the smallest set of CIDRs that covers
the rest. A routed subnet that overlaps a route the machine already has is a conflict: it
is reported to the user with the ways out, never silently taken over.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidrs(texts: Iterable[str], what: str) -> list[Network]:
    """Parse CIDRs given by a user; ValueError names the bad one and the option."""
    networks: list[Network] = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as error:
            raise ValueError(f"{what}: {text!r} is not a CIDR ({error})") from None
    return networks


def _subtract(network: Network, excluded: Network) -> list[Network]:
    if network.version != excluded.version or not network.overlaps(excluded):
        return [network]
    if network.subnet_of(excluded):  # type: ignore[arg-type]
        return []
    return list(network.address_exclude(excluded))  # type: ignore[arg-type]


def routed_subnets(
    cluster: Iterable[Network], also: Iterable[Network], never: Iterable[Network]
) -> list[Network]:
    """The collapsed, sorted set of subnets to route through the VIF."""
    networks: list[Network] = [*cluster, *also]
    for excluded in never:
        networks = [part for net in networks for part in _subtract(net, excluded)]
    v4 = ipaddress.collapse_addresses(n for n in networks if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in networks if n.version == 6)
    return [*v4, *v6]


@dataclass(frozen=True)
class Conflict:
    subnet: Network
    route: Network
    device: str

    def __str__(self) -> str:
        # The part both claim: the smaller of the two ranges.
        overlap = self.route if self.route.prefixlen >= self.subnet.prefixlen else self.subnet
        return (
            f"cluster subnet {self.subnet} overlaps the local route {self.route} via "
            f"{self.device}: leave it to the local route (--never-proxy {overlap}), take it "
            f"over (--allow-conflicting-subnets {overlap}), or reach the cluster's addresses "
            f"through virtual ones (--vnat {self.subnet}, or --proxy-via {self.subnet}=WORKLOAD)"
        )


def conflicts(subnets: Iterable[Network], routes: Iterable[tuple[Network, str]]) -> list[Conflict]:
    """Routed subnets that overlap existing routes; default routes never conflict."""
    found = []
    for subnet in subnets:
        for route, device in routes:
            if route.prefixlen == 0 or route.version != subnet.version:
                continue
            if subnet.overlaps(route):
                found.append(Conflict(subnet, route, device))
    return found
