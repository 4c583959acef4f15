"""connect's routing and DNS flags, checked and turned into `RoutingOptions`. Sans-IO.

Each CIDR flag takes one CIDR or a comma-separated list, and may be repeated (as
Telepresence's). `--proxy-via CIDR=WORKLOAD` names a workload of the connect's namespace,
or `NAMESPACE/WORKLOAD`. `--dns-map NAME=TARGET` maps a name to an IP address or another
name. What depends on the cluster or the machine (a subnet that overlaps nothing, a virtual
subnet that collides with a route) is for rootd to judge; the syntax is checked here,
before a daemon starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kubepresence.cli.core.arguments import address_problem, cidr_problem, label_problem
from kubepresence.protocol.routing import ProxyVia, RoutingOptions

# A workload's name: an RFC 1123 subdomain (Deployments and StatefulSets may have dots).
_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


class RoutingFlagError(ValueError):
    """A flag's value is not valid; the message is one line."""


def _items(values: Iterable[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _cidrs(option: str, values: Iterable[str]) -> tuple[str, ...]:
    items = _items(values)
    for item in items:
        problem = cidr_problem(option, item)
        if problem:
            raise RoutingFlagError(problem)
    return tuple(items)


def _proxy_via(value: str) -> ProxyVia:
    cidr, equals, target = value.partition("=")
    if not equals or not cidr.strip() or not target.strip():
        raise RoutingFlagError(f"--proxy-via {value!r} is not CIDR=WORKLOAD")
    problem = cidr_problem("--proxy-via", cidr.strip())
    if problem:
        raise RoutingFlagError(problem)
    namespace, slash, workload = target.strip().rpartition("/")
    if slash and not namespace:
        raise RoutingFlagError(f"--proxy-via {value!r}: the namespace before '/' is empty")
    if namespace:
        problem = label_problem("--proxy-via namespace", namespace)
        if problem:
            raise RoutingFlagError(problem)
    if not _SUBDOMAIN.fullmatch(workload):
        raise RoutingFlagError(f"--proxy-via {value!r}: {workload!r} is not a workload name")
    return ProxyVia(cidr.strip(), namespace, workload)


def _suffixes(option: str, values: Iterable[str]) -> tuple[str, ...]:
    found = []
    for item in _items(values):
        suffix = item.strip(".").lower()
        if not suffix or address_problem(option, suffix) is not None:
            raise RoutingFlagError(f"{option} {item!r} is not a DNS name suffix")
        found.append(suffix)
    return tuple(found)


def _mappings(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    for value in values:
        name, equals, target = value.partition("=")
        name, target = name.strip().strip(".").lower(), target.strip()
        if not equals or not name or not target:
            raise RoutingFlagError(f"--dns-map {value!r} is not NAME=TARGET")
        for part in (name, target):
            problem = address_problem("--dns-map", part)
            if problem:
                raise RoutingFlagError(problem)
        found[name] = target
    return tuple(sorted(found.items()))


def parse_routing(
    *,
    allow_conflicting: Iterable[str] = (),
    vnat: Iterable[str] = (),
    proxy_via: Iterable[str] = (),
    virtual_subnet: str = "",
    dns_exclude_suffixes: Iterable[str] = (),
    dns_include_suffixes: Iterable[str] = (),
    dns_map: Iterable[str] = (),
) -> RoutingOptions:
    """RoutingOptions from the flags' values; RoutingFlagError names the first bad one."""
    if virtual_subnet:
        problem = cidr_problem("--virtual-subnet", virtual_subnet)
        if problem:
            raise RoutingFlagError(problem)
    return RoutingOptions(
        allow_conflicting=_cidrs("--allow-conflicting-subnets", allow_conflicting),
        vnat=_cidrs("--vnat", vnat),
        proxy_via=tuple(_proxy_via(v) for v in proxy_via),
        virtual_subnet=virtual_subnet.strip(),
        dns_exclude_suffixes=_suffixes("--dns-exclude-suffix", dns_exclude_suffixes),
        dns_include_suffixes=_suffixes("--dns-include-suffix", dns_include_suffixes),
        dns_mappings=_mappings(dns_map),
    )
