"""What an injected agent knows about itself, from the variables the webhook sets.

The webhook (manager `core.injection`) gives the agent container:
- the app container's env and envFrom (so the agent carries the app's environment),
- KP_AGENT_POD_NAME / KP_AGENT_POD_NAMESPACE / KP_AGENT_POD_IP from the downward API,
- KP_AGENT_CONFIG: JSON `{"workload_kind", "workload_name", "container", "ports":
  [{"name", "app_port", "agent_port", "redirected"}], "app_mounts_root", "sftp_port",
  "health_port"}` (the app's volumes are mounted under `app_mounts_root`, exported over
  SFTP on `sftp_port`; 0 or absent: the app has no volumes, nothing to export; the
  kubelet's readiness probe connects to `health_port`, 0 or absent: none;
  `app_env_names`: the names the app container's `env` lists).

`load` turns these into an `AgentConfig`, or raises `ConfigError` with one clear line.
`app_environment` is the app's environment as far as the agent can tell: its own
environment minus the KP_AGENT_* settings and the variables its image defines, unless the
app's `env` lists them (then the kubelet set them, for the app as for the agent). What the
app's own image defines (ENV in its Dockerfile) the agent cannot see.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubepresence.protocol.errors import ConfigError

PREFIX = "KP_AGENT_"
CONFIG_ENV = "KP_AGENT_CONFIG"
POD_NAME_ENV = "KP_AGENT_POD_NAME"
POD_NAMESPACE_ENV = "KP_AGENT_POD_NAMESPACE"
POD_IP_ENV = "KP_AGENT_POD_IP"
# Set by the agent's image, or by the runtime for the agent's user: the app's may differ.
# (HOSTNAME and the Service variables are the same in every container of the pod.)
IMAGE_VARIABLES = frozenset({"PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "HOME"})


@dataclass(frozen=True)
class PortTakeover:
    name: str
    app_port: int
    agent_port: int
    redirected: bool = False


@dataclass(frozen=True)
class AgentConfig:
    pod_name: str
    namespace: str
    pod_ip: str
    workload_kind: str = ""
    workload_name: str = ""
    container: str = ""
    ports: tuple[PortTakeover, ...] = ()
    app_mounts_root: str = ""
    sftp_port: int = 0
    health_port: int = 0
    environment: Mapping[str, str] = field(default_factory=dict)


def _port(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw < 65536:
        raise ConfigError(f"{CONFIG_ENV}: {raw!r} is not a port number")
    return raw


def load(environ: Mapping[str, str]) -> AgentConfig:
    """The agent's configuration from its environment (see the module docstring)."""
    missing = [
        name for name in (CONFIG_ENV, POD_NAME_ENV, POD_NAMESPACE_ENV) if not environ.get(name)
    ]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set: the agent runs injected by the traffic manager"
        )
    try:
        raw = json.loads(environ[CONFIG_ENV])
    except ValueError as error:
        raise ConfigError(f"{CONFIG_ENV} is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{CONFIG_ENV} is not a JSON object")
    ports = []
    for item in raw.get("ports") or []:
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
    return AgentConfig(
        pod_name=environ[POD_NAME_ENV],
        namespace=environ[POD_NAMESPACE_ENV],
        pod_ip=environ.get(POD_IP_ENV, ""),
        workload_kind=str(raw.get("workload_kind") or ""),
        workload_name=str(raw.get("workload_name") or ""),
        container=str(raw.get("container") or ""),
        ports=tuple(ports),
        app_mounts_root=str(raw.get("app_mounts_root") or ""),
        sftp_port=_port(raw["sftp_port"]) if raw.get("sftp_port") else 0,
        health_port=_port(raw["health_port"]) if raw.get("health_port") else 0,
        environment=app_environment(environ, _names(raw.get("app_env_names"))),
    )


def _names(raw: Any) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise ConfigError(f"{CONFIG_ENV}: app_env_names is not a list of names: {raw!r}")
    return frozenset(raw)


def parse_environ_block(data: bytes) -> dict[str, str]:
    """The variables of an environment block as /proc/PID/environ holds it (NAME=VALUE,
    each ended by NUL), decoded as os.environ decodes them.

    The agent reads its environment from /proc/self/environ, i.e. as the kubelet gave it:
    os.environ also holds what the interpreter added at its start (PEP 538 sets
    LC_CTYPE=C.UTF-8 in a container without a locale), which the app never had."""
    env: dict[str, str] = {}
    for item in data.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            env.setdefault(os.fsdecode(name), os.fsdecode(value))
    return env


def app_environment(
    environ: Mapping[str, str], app_names: frozenset[str] = frozenset()
) -> dict[str, str]:
    """The app container's environment as the agent sees it (see the module docstring)."""
    return {
        k: v
        for k, v in sorted(environ.items())
        if not k.startswith(PREFIX) and (k not in IMAGE_VARIABLES or k in app_names)
    }


def next_backoff(previous: float, *, first: float = 1.0, limit: float = 10.0) -> float:
    """The wait before the next attempt to reach the manager: doubling, capped.

    The cap bounds how long an agent stays away after the manager returns; one dial per
    agent every 10 s costs the cluster nothing."""
    if previous <= 0:
        return first
    return min(previous * 2, limit)
