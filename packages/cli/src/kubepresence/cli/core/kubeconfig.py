"""Which kubeconfig, context and namespace a command uses: kubectl's rules.

`--kubeconfig` wins; else the KUBECONFIG list (files merged, first one that sets a key
wins); else ~/.kube/config. `--context` wins over current-context; `--namespace` over the
context's namespace, over "default". This module only decides; reading files is the
caller's job (it hands in the parsed documents).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepresence.protocol.errors import ConfigError


def kubeconfig_paths(flag: str | None, env: Mapping[str, str], home: Path) -> list[Path]:
    if flag:
        return [Path(flag).expanduser()]
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return [Path(p).expanduser() for p in listed]
    return [home / ".kube" / "config"]


@dataclass(frozen=True)
class Selection:
    context: str
    cluster: str
    server: str
    namespace: str
    user: str


def _named(documents: Sequence[Mapping[str, Any]], section: str) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for doc in documents:
        for entry in doc.get(section) or []:
            name = entry.get("name")
            if isinstance(name, str) and name not in found:
                found[name] = entry.get(section.rstrip("s")) or {}
    return found


def select(
    documents: Sequence[Mapping[str, Any]],
    context: str | None = None,
    namespace: str | None = None,
) -> Selection:
    """Resolve the context, cluster and namespace the way kubectl does."""
    current = context or next(
        (d["current-context"] for d in documents if d.get("current-context")), ""
    )
    if not current:
        raise ConfigError("the kubeconfig has no current context: pass --context")
    contexts = _named(documents, "contexts")
    if current not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise ConfigError(f"context {current!r} is not in the kubeconfig (known: {known})")
    ctx = contexts[current]
    cluster_name = str(ctx.get("cluster", ""))
    cluster = _named(documents, "clusters").get(cluster_name)
    if cluster is None:
        raise ConfigError(f"context {current!r} names cluster {cluster_name!r}, which is missing")
    return Selection(
        context=current,
        cluster=cluster_name,
        server=str(cluster.get("server", "")),
        namespace=namespace or str(ctx.get("namespace") or "default"),
        user=str(ctx.get("user", "")),
    )
