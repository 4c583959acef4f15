"""The user daemon's port-forward through the API server, run on the workstation.

Scenarios, each over SPDY/3.1 (what kubectl speaks) and over WebSocket:
- from the workstation (which reaches only the API server), userd's port-forward code
  opens a port-forward to the echo pod and an HTTP request through it gets the pod's
  answer;
- a port-forward to a port nothing listens on fails with one clear cluster error;
- the asyncio transport the gRPC channel to the manager runs on (`SpdyTransport` straight
  over SPDY, `PortForwardTransport` over WebSocket) carries a protocol's request and the
  pod's answer, twice (each on its own connection), and tells the protocol once the pod
  side ended;
- 8 MiB written at once into that transport to a TCP echo pod come back whole and in
  order (split into many frames, the socket pushing back on the writer);
- `auto` (the default) picks SPDY on this cluster; behind a proxy that refuses SPDY
  upgrades it falls back to WebSocket and keeps it, and `spdy` alone names the refusal;
- SPDY authenticates with a bearer token (a ServiceAccount's), and a token without the
  right to port-forward gets one clear 403 with the API server's reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from kpcluster import layout
from kpcluster.harness import Cluster
from workstation_cli import token_kubeconfig
from workstation_servers import PROGRAMS

# userd's port-forward code run on the workstation, one subcommand per test.
CHECKS = PROGRAMS / "portforward_checks.py"


def _body(http_answer: str) -> dict[str, object]:
    head, _, body = http_answer.partition("\r\n\r\n")
    status_line = head.splitlines()[0]
    assert status_line.startswith("HTTP/1."), head
    assert " 200 " in status_line, head
    return dict(json.loads(body))


@pytest.mark.parametrize("protocol", ["spdy", "websocket", "auto"])
def test_userd_portforward_from_the_workstation(
    cluster: Cluster, namespace: str, protocol: str
) -> None:
    echo = cluster.deploy_echo("http", namespace)
    tcp_echo = cluster.deploy_echo("tcp", namespace)
    result = cluster.on_workstation(
        [
            sys.executable,
            str(CHECKS),
            "forward",
            namespace,
            echo.pod_name,
            str(echo.pod_port),
            "9",
            str(layout.WORKSTATION_KUBECONFIG),
            tcp_echo.pod_name,
            str(tcp_echo.pod_port),
            protocol,
        ],
        timeout=180,
    )
    data = json.loads(result.stdout)
    assert data["protocol"] == ("spdy" if protocol == "auto" else protocol)
    direct = _body(data["direct"])
    assert direct["path"] == "/pf-check"
    assert direct["pod"] == echo.pod_name
    category, message = data["bad_port"]
    assert category == "cluster"
    assert "9" in message
    for answer, times_lost in data["transport"]:
        assert _body(answer)["pod"] == echo.pod_name
        assert times_lost == 1
    transport = "PortForwardTransport" if protocol == "websocket" else "SpdyTransport"
    assert data["bulk"] == [8 * 1024 * 1024, True, transport]


def test_auto_falls_back_to_websocket_where_spdy_is_refused(
    cluster: Cluster, namespace: str
) -> None:
    echo = cluster.deploy_echo("http", namespace)
    result = cluster.on_workstation(
        [
            sys.executable,
            str(CHECKS),
            "fallback",
            namespace,
            echo.pod_name,
            str(echo.pod_port),
            str(layout.WORKSTATION_KUBECONFIG),
        ],
        timeout=120,
    )
    data = json.loads(result.stdout)
    for answer in data["answers"]:
        assert _body(answer)["path"] == "/fallback"
    # auto tried SPDY once, took the WebSocket and kept it; spdy alone says why it failed.
    assert data["protocol"] == "websocket"
    assert data["upgrades_seen"] == [
        "upgrade: spdy/3.1",
        "upgrade: websocket",
        "upgrade: websocket",
        "upgrade: spdy/3.1",
    ]
    category, message = data["spdy_only"]
    assert category == "cluster"
    assert "refused: 400 Bad Request: only WebSocket upgrades here" in message


def test_spdy_authenticates_with_a_bearer_token(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    # Tokens are what most managed clusters hand out (exec plugins, service accounts).
    echo = cluster.deploy_echo("http", namespace)
    rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create", "get"]},
    ]
    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}
            for meta in (
                {"name": "forwarder", "namespace": namespace},
                {"name": "onlooker", "namespace": namespace},
            )
        ]
        + [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "forwarder", "namespace": namespace},
                "rules": rules,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "forwarder", "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "forwarder",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": "forwarder", "namespace": namespace}
                ],
            },
        ]
    )
    allowed = token_kubeconfig(cluster, namespace, "forwarder", tmp_path / "forwarder.conf")
    refused = token_kubeconfig(cluster, namespace, "onlooker", tmp_path / "onlooker.conf")
    result = cluster.on_workstation(
        [
            sys.executable,
            str(CHECKS),
            "token",
            namespace,
            echo.pod_name,
            str(echo.pod_port),
            str(allowed),
            str(refused),
        ],
        timeout=120,
    )
    answer, refusal = json.loads(result.stdout)
    assert _body(answer)["path"] == "/token"
    category, message = refusal
    assert category == "cluster"
    assert "refused: 403 Forbidden" in message
    assert "system:serviceaccount:" in message  # the API server's own reason
