"""connect's routing and DNS choices, as the CLI, userd and rootd share them.

`RoutingOptions` is what the user asked for (`--allow-conflicting-subnets`, `--vnat`,
`--proxy-via`, `--virtual-subnet`, the DNS suffix and mapping flags); rootd checks it
against the cluster and the machine and reports back what it applied, with the virtual
addresses it handed out. One conversion to and from the wire, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kubepresence.protocol.gen import common

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


def from_message(message: common.RoutingOptions | None) -> RoutingOptions:
    if message is None:
        return RoutingOptions()
    return RoutingOptions(
        allow_conflicting=tuple(message.allow_conflicting),
        vnat=tuple(message.vnat),
        proxy_via=tuple(ProxyVia(p.cidr, p.namespace, p.workload) for p in message.proxy_via),
        virtual_subnet=message.virtual_subnet,
        dns_exclude_suffixes=tuple(message.dns_exclude_suffixes),
        dns_include_suffixes=tuple(message.dns_include_suffixes),
        dns_mappings=tuple(sorted(message.dns_mappings.items())),
    )


def to_message(options: RoutingOptions) -> common.RoutingOptions:
    return common.RoutingOptions(
        allow_conflicting=list(options.allow_conflicting),
        vnat=list(options.vnat),
        proxy_via=[
            common.ProxyVia(cidr=p.cidr, namespace=p.namespace, workload=p.workload)
            for p in options.proxy_via
        ],
        virtual_subnet=options.virtual_subnet,
        dns_exclude_suffixes=list(options.dns_exclude_suffixes),
        dns_include_suffixes=list(options.dns_include_suffixes),
        dns_mappings=dict(options.dns_mappings),
    )


def addresses_from_messages(messages: list[common.VirtualAddress]) -> list[VirtualAddress]:
    return [VirtualAddress(m.virtual_ip, m.cluster_ip, m.via) for m in messages]


def addresses_to_messages(addresses: list[VirtualAddress]) -> list[common.VirtualAddress]:
    return [
        common.VirtualAddress(virtual_ip=a.virtual_ip, cluster_ip=a.cluster_ip, via=a.via)
        for a in addresses
    ]
