"""connect's routing and DNS choices, as the CLI, userd and rootd share them.

`RoutingOptions` is what the user asked for (`--allow-conflicting-subnets`, `--vnat`,
`--proxy-via`, `--virtual-subnet`, the DNS suffix and mapping flags); rootd checks it
against the cluster and the machine and reports back what it applied, with the virtual
addresses it handed out. One conversion to and from the wire, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# RFC 2544's benchmarking range: never routed on the internet, rarely used by VPNs or
# home networks (unlike 100.64.0.0/10, which Tailscale takes).
DEFAULT_VIRTUAL_SUBNET = "198.18.0.0/15"


@dataclass(frozen=True, slots=True)
class ProxyVia:
    cidr: str
    namespace: str
    workload: str

    @property
    def workload_ref(self) -> str:
        return f"{self.namespace}/{self.workload}"


@dataclass(frozen=True, slots=True)
class RoutingOptions:
    allow_conflicting: tuple[str, ...] = ()
    vnat: tuple[str, ...] = ()
    proxy_via: tuple[ProxyVia, ...] = ()
    virtual_subnet: str = ""
    dns_exclude_suffixes: tuple[str, ...] = ()
    dns_include_suffixes: tuple[str, ...] = ()
    dns_mappings: tuple[tuple[str, str], ...] = field(default=())

    @property
    def translated(self) -> bool:
        return bool(self.vnat or self.proxy_via)

    def in_namespace(self, namespace: str) -> RoutingOptions:
        """The same, with each proxy-via workload given without a namespace placed in
        `namespace` (the connect's)."""
        placed = tuple(replace(p, namespace=p.namespace or namespace) for p in self.proxy_via)
        return replace(self, proxy_via=placed)


@dataclass(frozen=True, slots=True)
class VirtualAddress:
    virtual_ip: str
    cluster_ip: str
    via: str = ""  # namespace/workload for proxy-via
