"""The manager's watches: agent pods, nodes and workloads (rules in core.observed).

One restartable watch (k8s.watching) per kind and scope: cluster-wide when the manager
manages every namespace, else one per managed namespace (namespaced RBAC grants nothing
more). Nodes are cluster-scoped: when the manager may not watch them (403), the pod
subnets stay as discovered at start, and one log line says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from kubernetes_asyncio import client

from kubepresence.manager.core.observed import (
    PodFate,
    deleted_workloads,
    is_agent_pod,
    node_pod_subnets,
    pod_ends,
)
from kubepresence.manager.core.watchcache import Change, WatchCache
from kubepresence.manager.k8s.errors import KubernetesError
from kubepresence.manager.k8s.watching import ListCall, Watch
from kubepresence.protocol.workloads import KINDS

log = logging.getLogger(__name__)

FORBIDDEN = 403


class Observer(Protocol):
    """What the watches tell (ManagerService is one)."""

    def pod_ended(self, namespace: str, pod: str, *, deleted: bool) -> None: ...

    def pod_subnets_changed(self, subnets: list[str]) -> None: ...

    def workload_deleted(self, namespace: str, name: str) -> None: ...


def _scoped(
    what: str, namespace: str | None, namespaced: ListCall, everywhere: ListCall
) -> tuple[str, ListCall, dict[str, Any]]:
    if namespace is None:
        return f"{what} in all namespaces", everywhere, {}
    return f"{what} in {namespace}", namespaced, {"namespace": namespace}


def watches(api: client.ApiClient, observer: Observer, namespaces: Sequence[str]) -> list[Watch]:
    """The pod and workload watches; `namespaces` empty: cluster-wide."""
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)

    def on_pods(changes: list[Change], cache: WatchCache) -> None:
        for end in pod_ends(changes):
            observer.pod_ended(end.namespace, end.name, deleted=end.fate is PodFate.GONE)

    def on_workloads(changes: list[Change], cache: WatchCache) -> None:
        for namespace, name in deleted_workloads(changes):
            observer.workload_deleted(namespace, name)

    found = []
    scopes: list[str | None] = list(namespaces) or [None]
    for namespace in scopes:
        what, call, params = _scoped(
            "agent pods", namespace, core.list_namespaced_pod, core.list_pod_for_all_namespaces
        )
        found.append(Watch(what, call, on_pods, cache=WatchCache(is_agent_pod), **params))
        for kind in KINDS:
            namespaced = getattr(apps, kind.call("list"))
            everywhere = getattr(apps, kind.call("list", everywhere=True))
            what, call, params = _scoped(kind.plural, namespace, namespaced, everywhere)
            found.append(Watch(what, call, on_workloads, **params))
    return found


async def watch_nodes(api: client.ApiClient, observer: Observer) -> None:
    """Follow the nodes' pod CIDRs; without the right to, keep what discovery found."""

    def on_nodes(changes: list[Change], cache: WatchCache) -> None:
        try:
            subnets = node_pod_subnets(cache)
        except ValueError as error:
            log.warning("a node's podCIDR is malformed (%s): pod subnets unchanged", error)
            return
        observer.pod_subnets_changed(subnets)

    nodes = Watch(
        "nodes", client.CoreV1Api(api).list_node, on_nodes, give_up_on=frozenset({FORBIDDEN})
    )
    try:
        await nodes.run()
    except KubernetesError as error:
        log.warning("%s: the pod subnets stay as discovered at start", error)


async def observe(api: client.ApiClient, observer: Observer, namespaces: Sequence[str]) -> None:
    """Run every watch until cancelled."""
    async with asyncio.TaskGroup() as group:
        group.create_task(watch_nodes(api, observer), name="watch nodes")
        for watch in watches(api, observer, namespaces):
            group.create_task(watch.run(), name=f"watch {watch.what}")
