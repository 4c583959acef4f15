"""Removing traffic agents from workloads: clear the injection annotation from the pod
template, so the workload rolls out without the sidecar."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubepresence.protocol.annotations import INJECT_ENABLED, INJECT_TRAFFIC_AGENT
from kubepresence.protocol.errors import ClusterError, NotFoundError

log = logging.getLogger(__name__)

NOT_FOUND = 404
ROLLOUT_POLL = 0.5
# A JSON merge patch with null deletes the key; the template change rolls the pods.
_REMOVE = {"spec": {"template": {"metadata": {"annotations": {INJECT_TRAFFIC_AGENT: None}}}}}


def _kinds(apps: client.AppsV1Api) -> list[tuple[str, Any, Any, Any]]:
    return [
        (
            "Deployment",
            apps.read_namespaced_deployment,
            apps.patch_namespaced_deployment,
            apps.list_namespaced_deployment,
        ),
        (
            "StatefulSet",
            apps.read_namespaced_stateful_set,
            apps.patch_namespaced_stateful_set,
            apps.list_namespaced_stateful_set,
        ),
        (
            "ReplicaSet",
            apps.read_namespaced_replica_set,
            apps.patch_namespaced_replica_set,
            apps.list_namespaced_replica_set,
        ),
    ]


def _injected(workload: Any) -> bool:
    annotations = workload.spec.template.metadata.annotations or {}
    return annotations.get(INJECT_TRAFFIC_AGENT) == INJECT_ENABLED


async def _patch(
    kind: str, patch: Callable[..., Awaitable[Any]], name: str, namespace: str
) -> None:
    try:
        await patch(name, namespace, _REMOVE)
    except ApiException as error:
        raise ClusterError(
            f"cannot remove the agent from {kind} {namespace}/{name}: {error.reason}"
        ) from error
    log.info("agent removed from %s %s/%s", kind, namespace, name)


async def remove_agent(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Remove the agent from one workload; False when it had none. NotFoundError if missing."""
    for kind, read, patch, _ in _kinds(client.AppsV1Api(api)):
        try:
            workload = await read(name, namespace)
        except ApiException as error:
            if error.status == NOT_FOUND:
                continue
            raise ClusterError(f"cannot read {kind} {namespace}/{name}: {error.reason}") from error
        if not _injected(workload):
            return False
        await _patch(kind, patch, name, namespace)
        return True
    raise NotFoundError(
        f"no Deployment, StatefulSet or ReplicaSet named {name!r} in namespace {namespace!r}"
    )


async def remove_all_agents(api: client.ApiClient, namespace: str) -> list[str]:
    """Remove the agent from every workload of the namespace that has one."""
    removed = []
    for kind, _, patch, list_ in _kinds(client.AppsV1Api(api)):
        try:
            workloads = await list_(namespace)
        except ApiException as error:
            raise ClusterError(f"cannot list {kind}s in {namespace}: {error.reason}") from error
        for workload in workloads.items:
            owned = any(o.controller for o in workload.metadata.owner_references or [])
            if _injected(workload) and not owned:  # a Deployment's ReplicaSets follow it
                await _patch(kind, patch, workload.metadata.name, namespace)
                removed.append(f"{kind.lower()}/{workload.metadata.name}")
    return removed


async def list_workloads(api: client.ApiClient, namespace: str) -> list[tuple[str, str, bool]]:
    """(kind, name, has the agent) of the namespace's interceptable workloads."""
    found = []
    for kind, _, _, list_ in _kinds(client.AppsV1Api(api)):
        try:
            workloads = await list_(namespace)
        except ApiException as error:
            raise ClusterError(f"cannot list {kind}s in {namespace}: {error.reason}") from error
        for workload in workloads.items:
            if any(o.controller for o in workload.metadata.owner_references or []):
                continue  # a Deployment's ReplicaSets are the Deployment's business
            found.append((kind, str(workload.metadata.name), _injected(workload)))
    return sorted(found, key=lambda w: (w[1], w[0]))


def _rolled_out(kind: str, workload: Any) -> bool:
    status, spec = workload.status, workload.spec
    wanted = spec.replicas if spec.replicas is not None else 1
    if (status.observed_generation or 0) < (workload.metadata.generation or 0):
        return False
    if kind == "Deployment":
        return (
            (status.updated_replicas or 0) == wanted
            and (status.available_replicas or 0) == wanted
            and (status.replicas or 0) == wanted  # no old pod left
        )
    if kind == "StatefulSet":
        return (
            status.current_revision == status.update_revision
            and (status.ready_replicas or 0) == wanted
        )
    return True  # a bare ReplicaSet does not roll: its pods are what they are


async def wait_rolled_out(api: client.ApiClient, namespace: str, name: str) -> None:
    """Until the workload's pods are all new (with the agent) and old ones are gone.

    The caller bounds the wait (asyncio.timeout); a workload that is not found or cannot
    be read ends it at once.
    """
    for kind, read, _, _ in _kinds(client.AppsV1Api(api)):
        try:
            await read(name, namespace)
        except ApiException as error:
            if error.status == NOT_FOUND:
                continue
            raise ClusterError(f"cannot read {kind} {namespace}/{name}: {error.reason}") from error
        while True:
            try:
                workload = await read(name, namespace)
            except ApiException as error:
                raise ClusterError(
                    f"cannot read {kind} {namespace}/{name}: {error.reason}"
                ) from error
            if _rolled_out(kind, workload):
                return
            await asyncio.sleep(ROLLOUT_POLL)
    raise NotFoundError(f"no workload named {name!r} in namespace {namespace!r}")
