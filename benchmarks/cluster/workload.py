"""What the suite deploys: the benchmark server (Deployment + Service, a named target port
so an intercept can take it over) and where its scripts come from."""

from __future__ import annotations

import hashlib
import random
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_SOURCE = (HERE / "benchserver.py").read_text()
CLIENT_SOURCE = (HERE / "benchclient.py").read_text()

NAME = "bench"
POD_PORT = 8080
SERVICE_PORT = 80
PORT_NAME = "http"
# Whatever the server answers to /whoami: the app in the cluster, or the workstation.
APP = "app"
WORKSTATION = "workstation"


def manifests(namespace: str, image: str) -> list[dict[str, Any]]:
    labels = {"app": NAME}
    container = {
        "name": NAME,
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", SERVER_SOURCE, str(POD_PORT), APP],
        "ports": [{"name": PORT_NAME, "containerPort": POD_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": POD_PORT}, "periodSeconds": 1},
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": PORT_NAME, "port": SERVICE_PORT, "targetPort": PORT_NAME}],
            },
        },
    ]


@cache
def blob_sha256(mib: int) -> str:
    """The checksum of what the server sends for /blob/MIB (and the client uploads)."""
    block = random.Random(2544).randbytes(1 << 20)  # noqa: S311 (test data, not secrets)
    tail = memoryview(block)[8:]
    digest = hashlib.sha256()
    for i in range(mib):
        digest.update(i.to_bytes(8, "big"))
        digest.update(tail)
    return digest.hexdigest()
