"""A traffic agent as the parts speak of it: the ports it took over and what it tells the
manager about itself.

The manager's webhook decides the port takeovers and writes them into the agent's
configuration (`agentconfig`); the agent takes them over and reports them, with its pod's
identity, when it arrives (`AgentInfo` on the wire, `agentwire`); the manager keeps the
agents it knows in its table and shows them to clients. One type for each, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PortTakeover:
    """One app port the agent takes over."""

    name: str  # the original port name the agent now carries ("" for a numeric-only one)
    app_port: int  # the app container's real port
    agent_port: int  # the agent's port that took it over
    redirected: bool = False  # numeric: the init container redirects app_port → agent_port
    protocol: str = "TCP"


@dataclass(frozen=True)
class Agent:
    """What an agent reports about itself when it arrives at the manager."""

    pod_name: str
    namespace: str
    pod_ip: str = ""
    workload_name: str = ""
    workload_kind: str = ""  # one of `workloads.KINDS`' kinds, or "" for a bare pod
    container: str = ""  # the app container the agent serves
    ports: tuple[PortTakeover, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    version: str = ""
    sftp_port: int = 0  # where it exports the app's volumes; 0: none

    @property
    def pod(self) -> tuple[str, str]:
        return self.namespace, self.pod_name
