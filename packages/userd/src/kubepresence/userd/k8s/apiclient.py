"""Kubernetes API clients built from a kubeconfig, the way kubectl reads it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.kube_config import ConfigNode, KubeConfigLoader, KubeConfigMerger
from kubernetes_asyncio.stream import WsApiClient

from kubepresence.protocol.errors import ConfigError
from kubepresence.userd.core.credentials import CredentialConfigError, user_auth
from kubepresence.userd.k8s import credentials
from kubepresence.userd.k8s.errors import UNAUTHORIZED, RawApiError

DEFAULT_KUBECONFIG = Path.home() / ".kube" / "config"


def read_kubeconfig(source: str) -> KubeConfigMerger:
    """The merged kubeconfig of a path or KUBECONFIG-style path list, as kubectl merges it.

    Each file is checked first, so a file that cannot be read, is not YAML or is not a
    kubeconfig is named with the reason in one line (kubernetes-asyncio would raise a
    bare YAML or type error). As in kubectl, files of a list that do not exist are skipped.
    """
    paths = [p for p in source.split(os.pathsep) if p]
    found = 0
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists() and len(paths) > 1:
            continue
        try:
            text = path.read_bytes()
        except OSError as error:
            raise ConfigError(f"cannot read the kubeconfig {path}: {error.strerror}") from error
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(
                f"the kubeconfig {path} is not valid YAML: {_yaml_problem(error)}"
            ) from error
        if content is not None and not isinstance(content, dict):
            raise ConfigError(
                f"the kubeconfig {path} is not a kubeconfig: its top level is a"
                f" {type(content).__name__}, not a mapping"
            )
        for key in ("clusters", "contexts", "users"):
            entries = (content or {}).get(key)
            if entries is not None and not (
                isinstance(entries, list)
                and all(isinstance(e, dict) and "name" in e for e in entries)
            ):
                raise ConfigError(
                    f"the kubeconfig {path} is not a kubeconfig:"
                    f" {key} must be a list of named entries"
                )
        found += 1
    if not found:
        raise ConfigError(f"no kubeconfig found at {source}")
    merged = KubeConfigMerger(source)
    if merged.config is None:
        raise ConfigError(f"no kubeconfig found at {source}")
    return merged


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else str(problem)


def _named(config: ConfigNode, key: str, name: Any) -> ConfigNode | None:
    entries = config.safe_get(key)
    if not name or not isinstance(entries, list):
        return None
    return ConfigNode(key, entries, config.path).get_with_name(name, safe=True)


async def load_configuration(
    kubeconfig: Path | str | None = None, context: str | None = None
) -> client.Configuration:
    """Client configuration from a kubeconfig (default: KUBECONFIG, ~/.kube/config), with
    the user's credential as kubectl handles it: exec plugins and token files are fetched
    again before they expire and after a 401 (see k8s/credentials.py)."""
    source = (
        str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or str(DEFAULT_KUBECONFIG)
    )
    merged = read_kubeconfig(source)
    config = merged.config
    assert config is not None
    name = context or config.safe_get("current-context")
    context_node = _named(config, "contexts", name)
    context_spec = (context_node.safe_get("context") if context_node else None) or {}
    user_name = context_spec.get("user") or ""
    user_node = _named(config, "users", user_name)
    user = user_node.safe_get("user") if user_node else None
    cluster_node = _named(config, "clusters", context_spec.get("cluster"))
    cluster = cluster_node.safe_get("cluster") if cluster_node else None
    base_dir = str(Path(user_node.path).parent) if user_node and user_node.path else ""
    try:
        auth = user_auth(user if isinstance(user, dict) else None, user_name, base_dir)
    except CredentialConfigError as error:
        raise ConfigError(str(error)) from error
    if auth is not None and isinstance(user, dict):
        # Ours to run and refresh: kubernetes-asyncio would run the plugin once and keep
        # its answer forever, and read a token file once.
        user.pop("exec", None)
        user.pop("tokenFile", None)
    configuration = client.Configuration()
    try:
        loader = KubeConfigLoader(config_dict=config, config_base_path=None, active_context=name)
        await loader.load_and_set(configuration)
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"cannot use the kubeconfig {source}: {error}") from error
    if auth is not None:
        await credentials.attach(
            configuration, auth, cluster if isinstance(cluster, dict) else None
        )
    return configuration


class _RetryOnUnauthorized:
    """A 401 drops a refreshable credential and the call is made once more with a new one
    (the token was revoked, or expired earlier than it said)."""

    configuration: client.Configuration

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        first = super().call_api(*args, **kwargs)  # type: ignore[misc]
        if kwargs.get("async_req"):
            return first
        return self._retrying(first, args, kwargs)

    async def _retrying(self, first: Any, args: Any, kwargs: Any) -> Any:
        try:
            return await first
        except RawApiError as error:  # below translation: the callers translate
            if error.status != UNAUTHORIZED or not credentials.invalidate(self.configuration):
                raise
        return await super().call_api(*args, **kwargs)  # type: ignore[misc]


class RestClient(_RetryOnUnauthorized, client.ApiClient):
    """The REST API client userd uses."""


class StreamClient(_RetryOnUnauthorized, WsApiClient):
    """The API client for the streaming subresources (exec, port-forward over WebSocket)."""


def rest_client(configuration: client.Configuration) -> client.ApiClient:
    return RestClient(configuration)


def websocket_client(configuration: client.Configuration) -> WsApiClient:
    """An API client for the streaming subresources (exec, port-forward)."""
    return StreamClient(configuration=configuration)


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
    return str(DEFAULT_KUBECONFIG)


async def resolve_target(source: str, context: str = "", namespace: str = "") -> KubeTarget:
    merged = read_kubeconfig(source)
    assert merged.config is not None
    contexts = merged.config.safe_get("contexts") or []
    by_name = {c["name"]: c.value if isinstance(c, ConfigNode) else c for c in contexts}
    name = context or merged.config.safe_get("current-context") or ""
    if not name:
        raise ConfigError(f"the kubeconfig {source} has no current context: pass --context")
    if name not in by_name:
        known = ", ".join(sorted(by_name)) or "none"
        raise ConfigError(f"context {name!r} is not in the kubeconfig (known: {known})")
    configuration = await load_configuration(source, name)
    chosen_namespace = namespace or by_name[name].get("context", {}).get("namespace") or "default"
    return KubeTarget(source, name, chosen_namespace, str(configuration.host), configuration)
