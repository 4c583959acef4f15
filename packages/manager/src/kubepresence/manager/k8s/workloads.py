"""On-demand agent injection: annotate a workload's pod template so its pods roll with
the agent (the webhook injects it into the new pods)."""

from __future__ import annotations

import logging

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubepresence.protocol.annotations import INJECT_TRAFFIC_AGENT
from kubepresence.protocol.errors import ClusterError, NotFoundError

log = logging.getLogger(__name__)

INJECT_ANNOTATION = INJECT_TRAFFIC_AGENT
NOT_FOUND = 404


class Workloads:
    def __init__(self, api: client.ApiClient) -> None:
        self._apps = client.AppsV1Api(api)

    async def ensure_injected(self, namespace: str, name: str) -> bool:
        """Annotate the Deployment, StatefulSet or ReplicaSet `name` for injection.

        Returns True when the template changed (its pods roll), False when it already
        asked for the agent. NotFoundError when there is no such workload.
        """
        patch = {
            "spec": {"template": {"metadata": {"annotations": {INJECT_ANNOTATION: "enabled"}}}}
        }
        for kind, read, write in (
            (
                "Deployment",
                self._apps.read_namespaced_deployment,
                self._apps.patch_namespaced_deployment,
            ),
            (
                "StatefulSet",
                self._apps.read_namespaced_stateful_set,
                self._apps.patch_namespaced_stateful_set,
            ),
            (
                "ReplicaSet",
                self._apps.read_namespaced_replica_set,
                self._apps.patch_namespaced_replica_set,
            ),
        ):
            try:
                workload = await read(name, namespace)
            except ApiException as error:
                if error.status == NOT_FOUND:
                    continue
                raise ClusterError(
                    f"cannot read {kind} {namespace}/{name}: {error.reason}"
                ) from error
            annotations = workload.spec.template.metadata.annotations or {}
            if annotations.get(INJECT_ANNOTATION) == "enabled":
                return False
            try:
                await write(name, namespace, patch)
            except ApiException as error:
                raise ClusterError(
                    f"cannot annotate {kind} {namespace}/{name} for the agent: {error.reason}"
                ) from error
            log.info("%s %s/%s annotated for agent injection", kind, namespace, name)
            return True
        raise NotFoundError(
            f"no Deployment, StatefulSet or ReplicaSet named {name!r} in namespace {namespace!r}"
        )
