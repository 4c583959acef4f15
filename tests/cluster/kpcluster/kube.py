"""Talking to the cluster through kubectl (the one client every test and user already has)."""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from . import layout
from .commands import ClusterError, run, wait_for


def kubectl(
    *args: str,
    kubeconfig: Path = layout.ADMIN_KUBECONFIG,
    timeout: float = 60,
    check: bool = True,
    input_text: str | None = None,
) -> str:
    proc = run(
        [
            layout.kubectl(),
            "--kubeconfig",
            kubeconfig,
            "--request-timeout",
            f"{max(5, int(timeout))}s",
            *args,
        ],
        timeout=timeout + 10,
        check=check,
        input_text=input_text,
    )
    return proc.stdout


def get_json(*args: str, timeout: float = 30) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json", timeout=timeout))


def apply(manifests: Sequence[dict[str, Any]], timeout: float = 60) -> None:
    kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(manifests), timeout=timeout)


def api_ready(timeout: float = 3) -> bool:
    """GET /readyz with the cluster CA (anonymous access to health endpoints stays on)."""
    try:
        ctx = ssl.create_default_context(cafile=str(layout.PKI / "ca.crt"))
        with urllib.request.urlopen(
            f"{layout.API_URL}/readyz", context=ctx, timeout=timeout
        ) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def is_ready(obj: dict[str, Any]) -> bool:
    """A node's or pod's Ready condition is True."""
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def node_ready() -> bool:
    try:
        node = get_json("node", layout.NODE_NAME, timeout=10)
    except ClusterError:
        return False
    return is_ready(node)


def deployment_available(name: str, namespace: str) -> bool:
    try:
        dep = get_json("deployment", name, "-n", namespace, timeout=10)
    except ClusterError:
        return False
    conditions = dep.get("status", {}).get("conditions", [])
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


def wait_rollout(name: str, namespace: str, timeout: float = 120) -> None:
    kubectl(
        "rollout",
        "status",
        f"deployment/{name}",
        "-n",
        namespace,
        f"--timeout={int(timeout)}s",
        timeout=timeout,
    )


def wait_pod_ready(name: str, namespace: str, timeout: float = 120) -> None:
    kubectl(
        "wait",
        "--for=condition=Ready",
        f"pod/{name}",
        "-n",
        namespace,
        f"--timeout={int(timeout)}s",
        timeout=timeout,
    )


def wait_node_ready(timeout: float) -> None:
    wait_for(f"node {layout.NODE_NAME} Ready", node_ready, timeout=timeout, interval=1)


def kubectl_env(kubeconfig: Path) -> dict[str, str]:
    """Environment in which a bare `kubectl` finds the cluster's binary and kubeconfig."""
    path = f"{layout.K8S_BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": path}
