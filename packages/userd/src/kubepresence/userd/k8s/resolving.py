"""Reading what `intercept --port LOCAL[:PORT]` resolves through: the workload's pod
template and the namespace's Services (the rules are in core.interceptports)."""

from __future__ import annotations

import logging
from typing import Any

from kubernetes_asyncio import client

from kubepresence.protocol.errors import UserError
from kubepresence.protocol.workloads import INJECT_CONTAINER
from kubepresence.userd.core.interceptports import (
    ContainerPort,
    Resolved,
    Service,
    ServicePort,
    Workload,
    resolve,
)
from kubepresence.userd.k8s.agents import read_workload
from kubepresence.userd.k8s.errors import api_errors

log = logging.getLogger(__name__)


def workload_of(kind: str, obj: Any) -> Workload:
    """The resolution's view of a workload object (its app container and pod labels)."""
    template = obj.spec.template
    annotations = template.metadata.annotations or {}
    containers = template.spec.containers or []
    wanted = annotations.get(INJECT_CONTAINER)
    app = next((c for c in containers if c.name == wanted), None) if wanted else None
    if app is None and wanted:
        raise UserError(
            f"{INJECT_CONTAINER}: {kind.lower()}/{obj.metadata.name} has no container {wanted!r}"
        )
    app = app or containers[0]
    return Workload(
        kind=kind,
        name=str(obj.metadata.name),
        labels=dict(template.metadata.labels or {}),
        container=str(app.name),
        ports=tuple(
            ContainerPort(
                number=int(p.container_port), name=p.name or "", protocol=p.protocol or "TCP"
            )
            for p in app.ports or []
        ),
    )


def service_of(obj: Any) -> Service:
    return Service(
        name=str(obj.metadata.name),
        selector=dict(obj.spec.selector or {}),
        ports=tuple(
            ServicePort(
                number=int(p.port),
                name=p.name or "",
                target=p.target_port,
                protocol=p.protocol or "TCP",
            )
            for p in obj.spec.ports or []
        ),
    )


async def resolve_port(
    api: client.ApiClient, namespace: str, name: str, port: str, service: str = ""
) -> Resolved:
    """The container port `intercept` takes for PORT ("" when not given) on workload `name`."""
    kind, obj = await read_workload(api, namespace, name)
    workload = workload_of(kind, obj)
    with api_errors(f"cannot list the services of {namespace}"):
        listed = await client.CoreV1Api(api).list_namespaced_service(namespace)
    resolved = resolve(workload, [service_of(s) for s in listed.items], port, service)
    log.info(
        "%s/%s port %r resolved to container port %s%s (service %s %s)",
        namespace,
        name,
        port,
        resolved.port,
        " (numeric)" if resolved.numeric else "",
        resolved.service or "none",
        resolved.service_port,
    )
    return resolved
