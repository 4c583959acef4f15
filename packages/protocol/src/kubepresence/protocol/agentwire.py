"""An agent on the wire: `agents.Agent` to and from the generated `AgentInfo`.

One conversion for the agent (which arrives with it) and the manager (which reads it, and
shows its agents to clients). A workload kind the wire does not know, or a port protocol
other than UDP, reads as "" and TCP.
"""

from __future__ import annotations

from kubepresence.protocol.agents import Agent, PortTakeover
from kubepresence.protocol.gen import common
from kubepresence.protocol.workloads import DEPLOYMENT, REPLICASET, STATEFULSET

_KIND_TO_MESSAGE = {
    DEPLOYMENT.kind: common.WorkloadKind.DEPLOYMENT,
    REPLICASET.kind: common.WorkloadKind.REPLICASET,
    STATEFULSET.kind: common.WorkloadKind.STATEFULSET,
}
_KIND_FROM_MESSAGE = {v: k for k, v in _KIND_TO_MESSAGE.items()}
_PROTOCOL_TO_MESSAGE = {"TCP": common.Protocol.TCP, "UDP": common.Protocol.UDP}


def to_message(agent: Agent) -> common.AgentInfo:
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
    )


def from_message(info: common.AgentInfo) -> Agent:
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
    )
