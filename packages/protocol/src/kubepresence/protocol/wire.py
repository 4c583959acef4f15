"""The shared plain types on the wire: each to and from its generated message, once.

Used only by the parts' `rpc/` modules (the generated types stay there).

- An HTTP filter (`httpfilter.HttpFilter`): names are lower-cased and the method
  upper-cased on the way in (both compare case-insensitively); an empty message is no
  filter at all (a global intercept). For the CLI, the manager and the agent.
- An agent (`agents.Agent` as `AgentInfo`): for the agent (which arrives with it) and the
  manager (which reads it, and shows its agents to clients). A workload kind the wire does
  not know, or a port protocol other than UDP, reads as "" and TCP.
- Routing options and virtual addresses (`routing`): from the CLI to userd, and on to
  rootd; back in `status`.
"""

from __future__ import annotations

from kubepresence.protocol.agents import Agent, PortTakeover
from kubepresence.protocol.gen import common
from kubepresence.protocol.httpfilter import HttpFilter
from kubepresence.protocol.routing import ProxyVia, RoutingOptions, VirtualAddress
from kubepresence.protocol.workloads import DEPLOYMENT, REPLICASET, STATEFULSET


def filter_from_message(message: common.HttpFilter | None) -> HttpFilter | None:
    if message is None:
        return None
    http_filter = HttpFilter(
        headers=tuple((h.name.lower(), h.value) for h in message.headers),
        path_prefix=message.path_prefix,
        path_equal=message.path_equal,
        path_regex=message.path_regex,
        method=message.method.upper(),
    )
    return None if http_filter == HttpFilter() else http_filter


def filter_to_message(http_filter: HttpFilter | None) -> common.HttpFilter | None:
    if http_filter is None:
        return None
    return common.HttpFilter(
        headers=[common.HeaderMatch(name=k, value=v) for k, v in http_filter.headers],
        path_prefix=http_filter.path_prefix,
        path_equal=http_filter.path_equal,
        path_regex=http_filter.path_regex,
        method=http_filter.method,
    )


_KIND_TO_MESSAGE = {
    DEPLOYMENT.kind: common.WorkloadKind.DEPLOYMENT,
    REPLICASET.kind: common.WorkloadKind.REPLICASET,
    STATEFULSET.kind: common.WorkloadKind.STATEFULSET,
}
_KIND_FROM_MESSAGE = {v: k for k, v in _KIND_TO_MESSAGE.items()}
_PROTOCOL_TO_MESSAGE = {"TCP": common.Protocol.TCP, "UDP": common.Protocol.UDP}


def agent_to_message(agent: Agent) -> common.AgentInfo:
    return common.AgentInfo(
        pod_name=agent.pod_name,
        namespace=agent.namespace,
        pod_ip=agent.pod_ip,
        workload_name=agent.workload_name,
        workload_kind=_KIND_TO_MESSAGE.get(agent.workload_kind, common.WorkloadKind.UNSPECIFIED),
        container=agent.container,
        ports=[
            common.ContainerPort(
                name=p.name,
                port=p.app_port,
                protocol=_PROTOCOL_TO_MESSAGE.get(p.protocol, common.Protocol.TCP),
                agent_port=p.agent_port,
                redirected=p.redirected,
            )
            for p in agent.ports
        ],
        environment=dict(agent.environment),
        sftp_port=agent.sftp_port,
        version=agent.version,
        direct_port=agent.direct_port,
    )


def agent_from_message(info: common.AgentInfo) -> Agent:
    ports = tuple(
        PortTakeover(
            p.name,
            p.port,
            p.agent_port,
            p.redirected,
            "UDP" if p.protocol == common.Protocol.UDP else "TCP",
        )
        for p in info.ports
    )
    return Agent(
        info.pod_name,
        info.namespace,
        info.pod_ip,
        info.workload_name,
        _KIND_FROM_MESSAGE.get(info.workload_kind, ""),
        info.container,
        ports,
        dict(info.environment),
        info.version,
        info.sftp_port,
        info.direct_port,
    )


def routing_from_message(message: common.RoutingOptions | None) -> RoutingOptions:
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


def routing_to_message(options: RoutingOptions) -> common.RoutingOptions:
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
