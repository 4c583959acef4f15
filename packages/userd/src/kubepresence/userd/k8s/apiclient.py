"""Kubernetes API clients built from a kubeconfig, the way kubectl reads it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.stream import WsApiClient

from kubepresence.protocol.errors import ConfigError


async def load_configuration(
    kubeconfig: Path | str | None = None, context: str | None = None
) -> client.Configuration:
    """Client configuration from a kubeconfig file (default: KUBECONFIG, ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        await config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, OSError) as error:
        raise ConfigError(f"cannot use the kubeconfig: {error}") from error
    return configuration


def websocket_client(configuration: client.Configuration) -> WsApiClient:
    """An API client for the streaming subresources (exec, port-forward)."""
    return WsApiClient(configuration=configuration)


@dataclass(frozen=True)
class KubeTarget:
    """The cluster a connect is for, resolved the way kubectl resolves it."""

    kubeconfig: str  # a path, or a KUBECONFIG-style list of paths
    context: str
    namespace: str
    server: str
    configuration: client.Configuration


def kubeconfig_source(flag: str, environment: Mapping[str, str]) -> str:
    """--kubeconfig, else the caller's KUBECONFIG (a path list), else ~/.kube/config."""
    if flag:
        return str(Path(flag).expanduser())
    listed = environment.get("KUBECONFIG", "")
    if listed:
        return listed
    return str(Path.home() / ".kube" / "config")


async def resolve_target(source: str, context: str = "", namespace: str = "") -> KubeTarget:
    try:
        contexts, active = config.list_kube_config_contexts(config_file=source)
    except (ConfigException, OSError) as error:
        raise ConfigError(f"cannot read the kubeconfig {source}: {error}") from error
    by_name = {c["name"]: c for c in contexts}
    name = context or (active or {}).get("name", "")
    if not name:
        raise ConfigError(f"the kubeconfig {source} has no current context: pass --context")
    if name not in by_name:
        known = ", ".join(sorted(by_name)) or "none"
        raise ConfigError(f"context {name!r} is not in the kubeconfig (known: {known})")
    configuration = await load_configuration(source, name)
    chosen_namespace = namespace or by_name[name].get("context", {}).get("namespace") or "default"
    return KubeTarget(source, name, chosen_namespace, str(configuration.host), configuration)
