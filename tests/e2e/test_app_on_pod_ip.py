"""An app that listens only on its pod's IP keeps working with the agent (issue 14, item 2).

The echo server binds `(POD_IP, 8080)` only, as frameworks do when given the pod's
address. Scenarios, for a Service whose target port is named and one whose target port is
a number (the agent's two takeover mechanisms):
- it answers through its Service before any intercept;
- with a personal intercept, requests with the header reach the workstation and requests
  without it are answered by the app (the agent found it on the pod's IP; before, the agent
  dialed only 127.0.0.1 and answered 502 Bad Gateway);
- after `leave`, with the agent still in the pod, the Service still answers from the app
  (before: connection reset).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kpcluster import kube, manifests
from kpcluster.commands import wait_for
from kpcluster.harness import Cluster
from workstation_cli import Workstation
from workstation_servers import answering_server, get_from_pod

LOCAL_PORT = 8092


@pytest.fixture
def local_server(cluster: Cluster) -> Iterator[None]:
    with answering_server(cluster, LOCAL_PORT, "from the workstation"):
        yield


def deploy_bound_to_pod_ip(cluster: Cluster, namespace: str, *, named: bool) -> None:
    objects = manifests.echo(
        "http", "bound", namespace, cluster.testapps_image, named_target_port=named
    )
    container = objects[0]["spec"]["template"]["spec"]["containers"][0]
    container["env"].append(
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    )
    container["command"] += ["--host", "$(POD_IP)"]
    cluster.apply(objects)
    kube.wait_rollout("bound", namespace, timeout=120)


def get(cluster: Cluster, namespace: str, pod: str, path: str, **headers: str) -> dict[str, Any]:
    return get_from_pod(cluster, namespace, pod, f"http://bound.{namespace}{path}", headers)


def from_app(answer: dict[str, Any]) -> bool:
    return answer.get("status") == 200 and json.loads(answer["body"])["pod"].startswith("bound-")


@pytest.mark.parametrize("named", [True, False], ids=["named-port", "numeric-port"])
def test_an_app_on_its_pod_ip_answers_around_and_after_an_intercept(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_server: None,
    named: bool,
) -> None:
    deploy_bound_to_pod_ip(cluster, namespace, named=named)
    client = cluster.client_pod(namespace)
    wait_for(
        "the Service to answer from the app",
        lambda: from_app(get(cluster, namespace, client, "/before")),
        timeout=60,
    )
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.logs()
    intercepted = workstation.kp(
        "intercept",
        "bound",
        "--port",
        f"{LOCAL_PORT}:http",
        "-n",
        namespace,
        "--http-header",
        "x-dev=me",
        timeout=240,
    )
    assert intercepted.returncode == 0, intercepted.stderr + workstation.logs()

    mine = get(cluster, namespace, client, "/mine", **{"x-dev": "me"})
    assert mine == {"status": 200, "body": "from the workstation"}
    others = get(cluster, namespace, client, "/others")
    assert from_app(others), others

    left = workstation.kp("leave", "bound")
    assert left.returncode == 0, left.stderr
    pod = cluster.get("pods", "-n", namespace, "-l", "app=bound")["items"][0]
    assert "kubepresence-agent" in [c["name"] for c in pod["spec"]["containers"]]
    after = get(cluster, namespace, client, "/after")
    assert from_app(after), after
