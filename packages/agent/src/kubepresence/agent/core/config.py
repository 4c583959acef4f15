"""What an injected agent knows about itself, from the variables the webhook sets.

The webhook (manager `core.injection`) gives the agent container the app container's env
and envFrom (so the agent carries the app's environment), its pod's identity and its
settings in KP_AGENT_* variables: their names and the KP_AGENT_CONFIG document are the
contract `kubepresence.protocol.agents` defines.

`load` turns these into an `AgentConfig`, or raises `ConfigError` with one clear line.
`app_environment` is the app's environment as far as the agent can tell: its own
environment minus the KP_AGENT_* settings and the variables its image defines, unless the
app's `env` lists them (then the kubelet set them, for the app as for the agent). What the
app's own image defines (ENV in its Dockerfile) the agent cannot see.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from kubepresence.protocol import agents
from kubepresence.protocol.agents import Agent, AgentSettings
from kubepresence.protocol.errors import ConfigError

# Set by the agent's image, or by the runtime for the agent's user: the app's may differ.
# (HOSTNAME and the Service variables are the same in every container of the pod.)
IMAGE_VARIABLES = frozenset({"PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "HOME"})


@dataclass(frozen=True, kw_only=True)
class AgentConfig(AgentSettings):
    """The manager's settings for this agent, its pod's identity and the app's environment."""

    pod_name: str
    namespace: str
    pod_ip: str
    environment: Mapping[str, str] = field(default_factory=dict)

    def description(self, version: str) -> Agent:
        """What the agent tells the manager about itself when it arrives."""
        return Agent(
            pod_name=self.pod_name,
            namespace=self.namespace,
            pod_ip=self.pod_ip,
            workload_name=self.workload_name,
            workload_kind=self.workload_kind,
            container=self.container,
            ports=self.ports,
            environment=dict(self.environment),
            version=version,
            sftp_port=self.sftp_port,
            direct_port=self.direct_port,
        )


def load(environ: Mapping[str, str]) -> AgentConfig:
    """The agent's configuration from its environment (see the module docstring)."""
    missing = [name for name in agents.REQUIRED_ENV if not environ.get(name)]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set: the agent runs injected by the traffic manager"
        )
    settings = agents.decode(environ[agents.CONFIG_ENV])
    return AgentConfig(
        **{f.name: getattr(settings, f.name) for f in fields(AgentSettings)},
        pod_name=environ[agents.POD_NAME_ENV],
        namespace=environ[agents.POD_NAMESPACE_ENV],
        pod_ip=environ.get(agents.POD_IP_ENV, ""),
        environment=app_environment(environ, frozenset(settings.app_env_names)),
    )


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
        if not k.startswith(agents.PREFIX) and (k not in IMAGE_VARIABLES or k in app_names)
    }
