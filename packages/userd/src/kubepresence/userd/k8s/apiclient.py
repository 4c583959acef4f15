"""Kubernetes API clients built from a kubeconfig, the way kubectl reads it."""

from __future__ import annotations

from pathlib import Path

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.stream import WsApiClient

from kubepresence.protocol.errors import ConfigError


async def load_configuration(
    kubeconfig: Path | None = None, context: str | None = None
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
