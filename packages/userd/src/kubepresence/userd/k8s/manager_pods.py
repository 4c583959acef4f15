"""Finding the traffic manager's pod to port-forward to."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from kubepresence.protocol.errors import ClusterError
from kubepresence.userd.k8s.errors import api_errors

MANAGER_SELECTOR = "app.kubernetes.io/name=kubepresence-manager"


def _ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def find_manager_pod(api: client.ApiClient, namespace: str) -> str:
    """The name of a Ready traffic manager pod; ClusterError when there is none."""
    with api_errors(f"cannot list the traffic manager's pods in {namespace}"):
        pods = await client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector=MANAGER_SELECTOR
        )
    ready = sorted((p for p in pods.items if _ready(p)), key=lambda p: p.metadata.name)
    if not ready:
        raise ClusterError(f"no Ready traffic manager pod in namespace {namespace}")
    return str(ready[0].metadata.name)
