"""On-demand agent injection: annotate a workload's pod template so its pods roll with
the agent (the webhook injects it into the new pods).

An intercept of a port that Services target by number also lists that number in the
template's numeric-ports annotation: the webhook then redirects it to the agent. A bare
ReplicaSet does not roll its pods on a template change; the user daemon replaces them.
"""

from __future__ import annotations

import logging

from kubernetes_asyncio import client

from kubepresence.manager.k8s.errors import api_errors
from kubepresence.protocol.errors import NotFoundError
from kubepresence.protocol.workloads import (
    INJECT_MANAGER_NAMESPACE,
    INJECT_NUMERIC_PORTS,
    INJECT_TRAFFIC_AGENT,
    KIND_NAMES,
    KINDS,
)

log = logging.getLogger(__name__)

INJECT_ANNOTATION = INJECT_TRAFFIC_AGENT


class Workloads:
    def __init__(self, api: client.ApiClient, manager_namespace: str) -> None:
        self._apps = client.AppsV1Api(api)
        self._manager_namespace = manager_namespace

    async def ensure_injected(
        self, namespace: str, name: str, numeric_port: int | None = None
    ) -> bool:
        """Annotate the Deployment, StatefulSet or ReplicaSet `name` for injection, and for
        the redirect of `numeric_port` when given.

        Returns True when the template changed (its pods roll), False when it already
        asked for all of it. NotFoundError when there is no such workload.
        """
        for workload_kind in KINDS:
            kind = workload_kind.kind
            read = getattr(self._apps, workload_kind.call("read"))
            write = getattr(self._apps, workload_kind.call("patch"))
            try:
                with api_errors(f"cannot read {kind} {namespace}/{name}"):
                    workload = await read(name, namespace)
            except NotFoundError:
                continue
            annotations = workload.spec.template.metadata.annotations or {}
            wanted = numeric_ports_with(annotations.get(INJECT_NUMERIC_PORTS, ""), numeric_port)
            changes = {
                INJECT_ANNOTATION: "enabled",
                INJECT_NUMERIC_PORTS: wanted,
                INJECT_MANAGER_NAMESPACE: self._manager_namespace,
            }
            changes = {k: v for k, v in changes.items() if v and annotations.get(k) != v}
            if not changes:
                return False
            patch = {"spec": {"template": {"metadata": {"annotations": changes}}}}
            with api_errors(f"cannot annotate {kind} {namespace}/{name} for the agent"):
                await write(name, namespace, patch)
            log.info("%s %s/%s annotated for agent injection: %s", kind, namespace, name, changes)
            return True
        raise NotFoundError(f"no {KIND_NAMES} named {name!r} in namespace {namespace!r}")


def numeric_ports_with(listed: str, port: int | None) -> str:
    """The numeric-ports annotation `listed` ("8080,9000") with `port` added, if any."""
    ports = [p.strip() for p in listed.split(",") if p.strip()]
    if port is not None and str(port) not in ports:
        ports.append(str(port))
    return ",".join(ports)
