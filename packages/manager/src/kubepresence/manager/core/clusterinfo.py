"""What the manager tells clients about the cluster network, derived from what it sees.

Pod subnets come from the nodes' podCIDRs, service subnets from the ServiceCIDR objects
(or, on clusters without them, from the API server's answer to an impossible ClusterIP),
the cluster domain and the DNS service IP from the manager pod's own resolv.conf, which
the kubelet wrote for the cluster. Parsing only: the k8s shell fetches the inputs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

_VALID_RANGE = re.compile(r"The range of valid IPs is ([0-9a-fA-F:./]+)")


@dataclass(frozen=True)
class ResolverConfig:
    nameservers: list[str]
    search: list[str]

    @property
    def cluster_domain(self) -> str:
        """`cluster.local` from the kubelet's `svc.cluster.local` search entry."""
        for domain in self.search:
            if domain.startswith("svc."):
                return domain.removeprefix("svc.")
        raise ValueError(f"no svc.<domain> entry in the resolver's search list {self.search}")


def parse_resolv_conf(text: str) -> ResolverConfig:
    nameservers: list[str] = []
    search: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = [w.rstrip(".") for w in words[1:]]
    return ResolverConfig(nameservers, search)


def collapse(cidrs: Iterable[str]) -> list[str]:
    """Sorted, merged CIDRs (IPv4 first); ValueError on a malformed one."""
    networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    v4 = ipaddress.collapse_addresses(n for n in networks if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in networks if n.version == 6)
    return [str(n) for n in (*v4, *v6)]


def service_range_from_error(message: str) -> list[str]:
    """The service CIDRs named in the API server's refusal of an out-of-range ClusterIP."""
    return collapse(m.group(1).rstrip(".") for m in _VALID_RANGE.finditer(message))
