"""A traffic agent as the parts speak of it: the ports it takes over, the configuration the
manager gives it, and what it tells the manager about itself.

The manager's webhook decides the port takeovers and writes them into the agent's
configuration (`AgentSettings`); the agent takes them over and reports them, with its
pod's identity, when it arrives (`Agent`; `AgentInfo` on the wire, see `wire`); the
manager keeps the agents it knows in its table and shows them to clients. One type for
each, here.

How the configuration travels. The webhook (manager `core.injection`) sets, in the agent container:
- KP_AGENT_POD_NAME / KP_AGENT_POD_NAMESPACE / KP_AGENT_POD_IP from the downward API,
- KP_AGENT_CONFIG: `AgentSettings` as one JSON object, `encode`d by the manager and
  `decode`d by the agent:
  `{"workload_kind", "workload_name", "container",
    "ports": [{"name", "app_port", "agent_port", "redirected"}],
    "app_mounts_root", "sftp_port", "health_port", "direct_port", "app_env_names"}`.
  The app's volumes are mounted under `app_mounts_root` and exported over SFTP on
  `sftp_port` (0 or absent: the app has no volumes, nothing to export); the kubelet's
  readiness probe connects to `health_port` (0 or absent: none); clients that port-forward
  to the pod take their intercepts' connections straight from the agent's `Agent` service
  on 127.0.0.1:`direct_port` (0 or absent: only through the manager); `app_env_names` are
  the names the app container's `env` lists.

Every agent setting has the KP_AGENT_ prefix, so it never collides with the app's own
environment, which the agent container carries too.

`decode` raises `ConfigError` with one clear line for anything the agent cannot use.
Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubepresence.protocol.errors import ConfigError


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
    direct_port: int = 0  # its Agent service, on the pod's loopback; 0: none

    @property
    def pod(self) -> tuple[str, str]:
        return self.namespace, self.pod_name


PREFIX = "KP_AGENT_"
CONFIG_ENV = f"{PREFIX}CONFIG"
POD_NAME_ENV = f"{PREFIX}POD_NAME"
POD_NAMESPACE_ENV = f"{PREFIX}POD_NAMESPACE"
POD_IP_ENV = f"{PREFIX}POD_IP"
# The downward API field each pod identity variable takes its value from.
POD_FIELDS = {
    POD_NAME_ENV: "metadata.name",
    POD_NAMESPACE_ENV: "metadata.namespace",
    POD_IP_ENV: "status.podIP",
}
# What an agent cannot run without (the pod IP may be unknown at first).
REQUIRED_ENV = (CONFIG_ENV, POD_NAME_ENV, POD_NAMESPACE_ENV)


@dataclass(frozen=True)
class AgentSettings:
    """The KP_AGENT_CONFIG document (see the module docstring)."""

    workload_kind: str = ""
    workload_name: str = ""
    container: str = ""
    ports: tuple[PortTakeover, ...] = ()
    app_mounts_root: str = ""
    sftp_port: int = 0
    health_port: int = 0
    direct_port: int = 0
    app_env_names: tuple[str, ...] = ()


def encode(settings: AgentSettings) -> str:
    """The KP_AGENT_CONFIG value for `settings` (compact JSON)."""
    document = {
        "workload_kind": settings.workload_kind,
        "workload_name": settings.workload_name,
        "container": settings.container,
        "ports": [
            {
                "name": p.name,
                "app_port": p.app_port,
                "agent_port": p.agent_port,
                "redirected": p.redirected,
            }
            for p in settings.ports
        ],
        "app_mounts_root": settings.app_mounts_root,
        "sftp_port": settings.sftp_port,
        "health_port": settings.health_port,
        "direct_port": settings.direct_port,
        # The agent reports these even where its image sets the same names (PATH, HOME…).
        "app_env_names": list(settings.app_env_names),
    }
    return json.dumps(document, separators=(",", ":"))


def _port(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw < 65536:
        raise ConfigError(f"{CONFIG_ENV}: {raw!r} is not a port number")
    return raw


def _names(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise ConfigError(f"{CONFIG_ENV}: app_env_names is not a list of names: {raw!r}")
    return tuple(raw)


def decode(text: str) -> AgentSettings:
    """The settings in a KP_AGENT_CONFIG value; ConfigError (one line) when it is not."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"{CONFIG_ENV} is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{CONFIG_ENV} is not a JSON object")
    listed = raw.get("ports") or []
    if not isinstance(listed, list):
        raise ConfigError(f"{CONFIG_ENV}: ports is not a list: {listed!r}")
    ports = []
    for item in listed:
        if not isinstance(item, dict):
            raise ConfigError(f"{CONFIG_ENV}: a port is not an object: {item!r}")
        ports.append(
            PortTakeover(
                name=str(item.get("name") or ""),
                app_port=_port(item.get("app_port")),
                agent_port=_port(item.get("agent_port")),
                redirected=bool(item.get("redirected", False)),
            )
        )
    agent_ports = [p.agent_port for p in ports]
    if len(set(agent_ports)) != len(agent_ports):
        raise ConfigError(f"{CONFIG_ENV}: an agent port is taken twice")
    return AgentSettings(
        workload_kind=str(raw.get("workload_kind") or ""),
        workload_name=str(raw.get("workload_name") or ""),
        container=str(raw.get("container") or ""),
        ports=tuple(ports),
        app_mounts_root=str(raw.get("app_mounts_root") or ""),
        sftp_port=_port(raw["sftp_port"]) if raw.get("sftp_port") else 0,
        health_port=_port(raw["health_port"]) if raw.get("health_port") else 0,
        direct_port=_port(raw["direct_port"]) if raw.get("direct_port") else 0,
        app_env_names=_names(raw.get("app_env_names")),
    )
