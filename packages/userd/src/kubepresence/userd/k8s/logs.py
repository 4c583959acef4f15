"""Collecting logs for `kubepresence gather-logs`: the workstation's daemons and the
cluster's traffic manager and agents, into one zip archive."""

from __future__ import annotations

import asyncio
import logging
import zipfile
from pathlib import Path

from kubernetes_asyncio import client

from kubepresence.protocol.errors import UserError
from kubepresence.protocol.workloads import AGENT_CONTAINER
from kubepresence.userd.k8s.errors import KubernetesError, api_errors

log = logging.getLogger(__name__)

MANAGER_SELECTOR = "app.kubernetes.io/name=kubepresence-manager"
TAIL_BYTES = 4 * 1024 * 1024  # per container: enough to see what happened, bounded


async def gather(
    api: client.ApiClient | None,
    local_logs: list[Path],
    manager_namespace: str,
    namespaces: list[str],
    destination: Path,
) -> list[str]:
    """Write the archive; returns the names of its members."""
    members: dict[str, bytes] = {}
    for path in local_logs:
        try:
            members[f"workstation/{path.name}"] = await asyncio.to_thread(path.read_bytes)
        except OSError as error:
            members[f"workstation/{path.name}.error"] = str(error).encode()
    if api is not None:
        core = client.CoreV1Api(api)
        members.update(await _pod_logs(core, manager_namespace, MANAGER_SELECTOR, None))
        for namespace in namespaces:
            members.update(await _pod_logs(core, namespace, None, AGENT_CONTAINER))
    if not destination.parent.is_dir():
        raise UserError(f"cannot write {destination}: {destination.parent} is not a directory")
    await asyncio.to_thread(_write_zip, destination, members)
    return sorted(members)


async def _pod_logs(
    core: client.CoreV1Api, namespace: str, selector: str | None, container: str | None
) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        with api_errors("cannot list pods"):
            pods = await core.list_namespaced_pod(namespace, label_selector=selector or "")
    except KubernetesError as error:
        return {f"cluster/{namespace}.error": error.message.encode()}
    for pod in pods.items:
        names = [c.name for c in pod.spec.containers]
        for name in names if container is None else [n for n in names if n == container]:
            try:
                with api_errors("cannot read the log"):
                    text = await core.read_namespaced_pod_log(
                        pod.metadata.name, namespace, container=name, limit_bytes=TAIL_BYTES
                    )
            except KubernetesError as error:
                text = error.message
            found[f"cluster/{namespace}/{pod.metadata.name}/{name}.log"] = str(text).encode()
    return found


def _write_zip(destination: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(members.items()):
            archive.writestr(name, data)
