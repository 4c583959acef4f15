"""Workloads and their traffic agents: watching agents arrive (a snapshot of the pods for
core.arrival), and removing them — clear the injection annotation from the pod template, so
the workload rolls out without the sidecar. A bare ReplicaSet (or an OnDelete
StatefulSet) does not roll on a template change: its pods are deleted so that it creates
them anew from the changed template."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from kubepresence.protocol.errors import NotFoundError, UserError
from kubepresence.protocol.workloads import (
    AGENT_CONTAINER,
    INJECT_ENABLED,
    INJECT_MANAGER_NAMESPACE,
    INJECT_NUMERIC_PORTS,
    INJECT_TRAFFIC_AGENT,
    KIND_NAMES,
    KINDS,
)
from kubepresence.userd.core.arrival import ConditionView, ContainerView, PodView
from kubepresence.userd.k8s.errors import KubernetesNotFoundError, api_errors

log = logging.getLogger(__name__)

# A JSON merge patch with null deletes the key; the template change rolls the pods. The
# other injection annotations go too: without the agent they mean nothing, and an
# intercept by a numeric port (or the manager's namespace) wrote them on demand.
_REMOVE = {
    "spec": {
        "template": {
            "metadata": {
                "annotations": {
                    INJECT_TRAFFIC_AGENT: None,
                    INJECT_MANAGER_NAMESPACE: None,
                    INJECT_NUMERIC_PORTS: None,
                }
            }
        }
    }
}


def _kinds(apps: client.AppsV1Api) -> list[tuple[str, Any, Any, Any]]:
    """(kind, read, patch, list) of each workload kind, in the order names are looked up."""
    return [
        (
            k.kind,
            getattr(apps, k.call("read")),
            getattr(apps, k.call("patch")),
            getattr(apps, k.call("list")),
        )
        for k in KINDS
    ]


def _injected(workload: Any) -> bool:
    annotations = workload.spec.template.metadata.annotations or {}
    return annotations.get(INJECT_TRAFFIC_AGENT) == INJECT_ENABLED


async def _patch(
    kind: str, patch: Callable[..., Awaitable[Any]], name: str, namespace: str
) -> None:
    with api_errors(f"cannot remove the agent from {kind} {namespace}/{name}"):
        await patch(name, namespace, _REMOVE)
    log.info("agent removed from %s %s/%s", kind, namespace, name)


async def read_workload(api: client.ApiClient, namespace: str, name: str) -> tuple[str, Any]:
    """(kind, object) of the Deployment, StatefulSet or ReplicaSet `name`; NotFoundError."""
    for kind, read, _, _ in _kinds(client.AppsV1Api(api)):
        try:
            with api_errors(f"cannot read {kind} {namespace}/{name}"):
                return kind, await read(name, namespace)
        except KubernetesNotFoundError:
            continue
    raise NotFoundError(f"no {KIND_NAMES} named {name!r} in namespace {namespace!r}")


async def require_agents(api: client.ApiClient, workloads: list[tuple[str, str, str]]) -> None:
    """Each (namespace, name, what needs it) is a workload that carries the traffic agent:
    NotFoundError or UserError naming the first that is not, before anything is applied."""
    for namespace, name, what in workloads:
        try:
            kind, workload = await read_workload(api, namespace, name)
        except NotFoundError as error:
            raise NotFoundError(f"{what}: {error}") from None
        if not _injected(workload):
            raise UserError(
                f"{what}: {kind} {namespace}/{name} has no traffic agent; intercept it once "
                f"(kubepresence intercept {name} -n {namespace} …, then leave) to add one"
            )


async def remove_agent(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Remove the agent from one workload; False when it had none. NotFoundError if missing."""
    for kind, read, patch, _ in _kinds(client.AppsV1Api(api)):
        try:
            with api_errors(f"cannot read {kind} {namespace}/{name}"):
                workload = await read(name, namespace)
        except KubernetesNotFoundError:
            continue
        if not _injected(workload):
            return False
        await _patch(kind, patch, name, namespace)
        await _replace_agent_pods(api, namespace, name)
        return True
    raise NotFoundError(f"no {KIND_NAMES} named {name!r} in namespace {namespace!r}")


async def remove_all_agents(api: client.ApiClient, namespace: str) -> list[str]:
    """Remove the agent from every workload of the namespace that has one."""
    removed = []
    for kind, _, patch, list_ in _kinds(client.AppsV1Api(api)):
        with api_errors(f"cannot list {kind}s in {namespace}"):
            workloads = await list_(namespace)
        for workload in workloads.items:
            owned = any(o.controller for o in workload.metadata.owner_references or [])
            if _injected(workload) and not owned:  # a Deployment's ReplicaSets follow it
                await _patch(kind, patch, workload.metadata.name, namespace)
                await _replace_agent_pods(api, namespace, workload.metadata.name)
                removed.append(f"{kind.lower()}/{workload.metadata.name}")
    return removed


async def list_workloads(api: client.ApiClient, namespace: str) -> list[tuple[str, str, bool]]:
    """(kind, name, has the agent) of the namespace's interceptable workloads."""
    found = []
    for kind, _, _, list_ in _kinds(client.AppsV1Api(api)):
        with api_errors(f"cannot list {kind}s in {namespace}"):
            workloads = await list_(namespace)
        for workload in workloads.items:
            if any(o.controller for o in workload.metadata.owner_references or []):
                continue  # a Deployment's ReplicaSets are the Deployment's business
            found.append((kind, str(workload.metadata.name), _injected(workload)))
    return sorted(found, key=lambda w: (w[1], w[0]))


_TRACKED = (INJECT_TRAFFIC_AGENT, INJECT_NUMERIC_PORTS)


@dataclass(frozen=True)
class Arrival:
    """A snapshot of a workload while its agents arrive."""

    kind: str
    replicas: int
    pods: list[PodView]
    replaces_pods: bool  # a template change rolls its pods (a bare ReplicaSet's does not)
    # Why the workload cannot create pods (its ReplicaFailure condition), "" when it can.
    failure: str = ""


def pod_view(pod: Any, template_annotations: dict[str, str]) -> PodView:
    annotations = pod.metadata.annotations or {}
    status = pod.status
    statuses = [
        *((s, True) for s in status.init_container_statuses or []),
        *((s, False) for s in status.container_statuses or []),
    ]
    containers = tuple(
        ContainerView(
            name=str(s.name),
            image=str(s.image or ""),
            ready=bool(s.ready),
            waiting_reason=(s.state.waiting.reason or "") if s.state and s.state.waiting else "",
            waiting_message=(s.state.waiting.message or "") if s.state and s.state.waiting else "",
            init=init,
        )
        for s, init in statuses
    )
    conditions = tuple(
        ConditionView(str(c.type), str(c.status), c.reason or "", c.message or "")
        for c in status.conditions or []
    )
    return PodView(
        name=str(pod.metadata.name),
        has_agent=any(c.name == AGENT_CONTAINER for c in pod.spec.containers or []),
        ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
        terminating=pod.metadata.deletion_timestamp is not None,
        current=all(annotations.get(k) == template_annotations.get(k) for k in _TRACKED),
        phase=str(status.phase or "Pending"),
        containers=containers,
        conditions=conditions,
    )


async def arrival(api: client.ApiClient, namespace: str, name: str) -> Arrival:
    """The workload `name` and its pods, now (NotFoundError if it is gone)."""
    kind, workload = await read_workload(api, namespace, name)
    labels = workload.spec.selector.match_labels or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    with api_errors(f"cannot list the pods of {namespace}/{name}"):
        listed = await client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector)
    template = dict(workload.spec.template.metadata.annotations or {})
    strategy = getattr(workload.spec, "update_strategy", None)
    return Arrival(
        kind=kind,
        replicas=workload.spec.replicas if workload.spec.replicas is not None else 1,
        pods=[pod_view(p, template) for p in listed.items],
        replaces_pods=not (
            kind == "ReplicaSet"
            or (kind == "StatefulSet" and strategy is not None and strategy.type == "OnDelete")
        ),
        failure=replica_failure(workload),
    )


def replica_failure(workload: Any) -> str:
    """The message of the workload's ReplicaFailure condition (a Deployment copies its
    ReplicaSets'), "" when there is none: e.g. the API server refused its pods."""
    status = workload.status
    for condition in (status.conditions if status is not None else None) or []:
        if condition.type == "ReplicaFailure" and condition.status == "True":
            return str(condition.message or condition.reason or "ReplicaFailure")
    return ""


async def serving_pods(api: client.ApiClient, namespace: str, service: str) -> set[str]:
    """The pods the Service `service` routes to now (its ready EndpointSlice endpoints)."""
    with api_errors(f"cannot read the endpoints of service {namespace}/{service}"):
        slices = await client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}"
        )
    return {
        str(endpoint.target_ref.name)
        for piece in slices.items
        for endpoint in piece.endpoints or []
        if endpoint.target_ref is not None
        # The API says: an unknown readiness is to be taken as ready.
        and (endpoint.conditions is None or endpoint.conditions.ready is not False)
    }


async def replace_pods(api: client.ApiClient, namespace: str, pods: list[str]) -> None:
    """Delete pods so that their workload creates them anew (with the agent)."""
    core = client.CoreV1Api(api)
    for pod in pods:
        try:
            with api_errors(
                f"cannot replace pod {namespace}/{pod} (a bare ReplicaSet does not roll its "
                "pods: they must be deleted to get the agent)"
            ):
                await core.delete_namespaced_pod(pod, namespace)
        except KubernetesNotFoundError:
            continue
        log.info("pod %s/%s deleted: its workload recreates it with the agent", namespace, pod)


async def _replace_agent_pods(api: client.ApiClient, namespace: str, name: str) -> None:
    """After the agent's removal: a workload that does not roll loses its agent pods."""
    now = await arrival(api, namespace, name)
    if not now.replaces_pods:
        await replace_pods(
            api, namespace, [p.name for p in now.pods if p.has_agent and not p.terminating]
        )
