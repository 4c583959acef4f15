"""Inbound traffic of an intercept comes straight from the agents, or through the manager.

userd port-forwards to every agent pod of its active intercepts and takes their
connections there; the traffic manager is then not in the path. Where the user may not
port-forward to the workload's pods, the connections come through the manager, and
`status` says so. What the manager carried is read from the manager itself
(GetFlowCounts, asked inside its pod).

Scenarios:
- with the workstation's own (admin) credentials and two replicas: `status` says the
  connections come straight from the agents of both pods; 30 requests from a cluster pod
  through the Service (spread over both pods) are all answered by the workstation, and
  the manager's hand-over count does not move; after `leave` the app answers again;
- with a ServiceAccount that may do all the rest but not port-forward in the workload's
  namespace: `status` names the manager and the API server's refusal; the requests are
  still answered by the workstation, and the manager's hand-over count grows by exactly
  as many.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kpcluster.commands import wait_for
from kpcluster.harness import Cluster
from workstation_cli import MANAGER_SELECTOR, Workstation, token_kubeconfig
from workstation_servers import PROGRAMS, answering_server

LOCAL_PORT = 8092
BODY = "workstation answers {path}"
REQUESTS = 30
GETS = (PROGRAMS / "sequential_gets.py").read_text()
COUNTS = (PROGRAMS / "manager_flow_counts.py").read_text()
ACCOUNT = "no-forwarding"
# Everything kubepresence touches, every verb, but not pods/portforward (a "*" resource
# would include it).
RESOURCES = {
    "": [
        "namespaces", "pods", "pods/log", "pods/exec", "services", "endpoints", "events",
        "configmaps", "secrets", "serviceaccounts", "nodes", "persistentvolumeclaims",
    ],
    "apps": [
        "deployments", "deployments/scale", "replicasets", "replicasets/scale",
        "statefulsets", "statefulsets/scale", "daemonsets", "controllerrevisions",
    ],
    "discovery.k8s.io": ["endpointslices"],
    "networking.k8s.io": ["ingresses"],
    "batch": ["jobs"],
    "coordination.k8s.io": ["leases"],
    "admissionregistration.k8s.io": ["mutatingwebhookconfigurations"],
    "rbac.authorization.k8s.io": ["roles", "rolebindings", "clusterroles", "clusterrolebindings"],
}  # fmt: skip


@pytest.fixture
def local_server(cluster: Cluster) -> Iterator[subprocess.Popen[str]]:
    with answering_server(cluster, LOCAL_PORT, BODY) as process:
        yield process


def hand_overs(cluster: Cluster, manager_namespace: str) -> int:
    """How many intercepted connections the manager has spliced since it started."""
    pod = (
        cluster.kubectl(
            "get", "pods", "-n", manager_namespace, "-l", MANAGER_SELECTOR, "-o", "name"
        )
        .split()[0]
        .removeprefix("pod/")
    )
    result = cluster.exec_in_pod(manager_namespace, pod, ["python3", "-c", COUNTS])
    return int(json.loads(result.stdout)["hand_overs"])


def requests_answered(cluster: Cluster, namespace: str, client: str) -> list[str]:
    """The bodies of REQUESTS GETs from the client pod through the echo Service."""
    result = cluster.exec_in_pod(
        namespace, client, ["python3", "-c", GETS, f"http://echo.{namespace}", str(REQUESTS)],
        timeout=180,
    )  # fmt: skip
    answers: list[dict[str, Any]] = json.loads(result.stdout)
    assert all("body" in a for a in answers), answers
    return [str(a["body"]) for a in answers]


def inbound(workstation: Workstation) -> str:
    return str(workstation.status()["connection"].get("inbound", ""))  # type: ignore[attr-defined]


def intercept(workstation: Workstation, namespace: str) -> None:
    made = workstation.kp(
        "intercept", "echo", "--port", f"{LOCAL_PORT}:http", "-n", namespace, timeout=240
    )
    assert made.returncode == 0, made.stderr + workstation.log("userd")


def test_inbound_comes_straight_from_every_agent_pod(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_server: subprocess.Popen[str],
) -> None:
    cluster.deploy_echo_workload("Deployment", namespace, replicas=2)
    client = cluster.client_pod(namespace)
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.log("userd")
    intercept(workstation, namespace)
    wait_for(
        "both agent pods to post our connections straight to us",
        lambda: inbound(workstation).startswith("straight from the agents (2 pod(s)"),
        timeout=60,
        interval=0.5,
    )
    before = hand_overs(cluster, manager_namespace)
    bodies = requests_answered(cluster, namespace, client)
    assert bodies == [BODY.format(path=f"/{i}") for i in range(REQUESTS)]
    assert hand_overs(cluster, manager_namespace) == before  # none crossed the manager

    left = workstation.kp("leave", "echo")
    assert left.returncode == 0, left.stderr
    wait_for("the status to drop the inbound line", lambda: not inbound(workstation), timeout=30)
    again = requests_answered(cluster, namespace, client)
    assert all(json.loads(body)["pod"].startswith("echo-") for body in again), again


@contextlib.contextmanager
def no_forwarding_kubeconfig(
    cluster: Cluster, namespace: str, manager_namespace: str, path: Path
) -> Iterator[Path]:
    """A ServiceAccount's kubeconfig: every right kubepresence uses, cluster-wide, but
    port-forward only in the manager's namespace. Its cluster-scoped grants are deleted
    afterwards."""
    role = f"kp-{namespace}-{ACCOUNT}"
    rules = [
        {"apiGroups": [group], "resources": resources, "verbs": ["*"]}
        for group, resources in RESOURCES.items()
    ]
    subject = {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}
    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": ACCOUNT, "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": role}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": role}, "subjects": [subject],
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": role}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "forward-to-manager", "namespace": manager_namespace},
             "rules": [{"apiGroups": [""], "resources": ["pods/portforward"],
                        "verbs": ["create", "get"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "forward-to-manager", "namespace": manager_namespace},
             "subjects": [subject],
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "forward-to-manager"}},
        ]
    )  # fmt: skip
    try:
        yield token_kubeconfig(cluster, namespace, ACCOUNT, path)
    finally:
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", role, "--ignore-not-found")


def test_inbound_goes_through_the_manager_where_port_forward_is_refused(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_server: subprocess.Popen[str],
    tmp_path: Path,
) -> None:
    cluster.deploy_echo_workload("Deployment", namespace)
    client = cluster.client_pod(namespace)
    # The admin installs the manager; the ServiceAccount then connects to it.
    installed = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert installed.returncode == 0, installed.stderr + workstation.log("userd")
    assert workstation.kp("quit", timeout=60).returncode == 0
    with no_forwarding_kubeconfig(
        cluster, namespace, manager_namespace, tmp_path / "no-forwarding.conf"
    ) as kubeconfig:
        workstation.env["KUBECONFIG"] = str(kubeconfig)
        connected = workstation.kp(
            "connect", "--manager-namespace", manager_namespace, "--no-install"
        )
        assert connected.returncode == 0, connected.stderr + workstation.log("userd")
        intercept(workstation, namespace)
        wait_for(
            "status to say the connections come through the manager",
            lambda: inbound(workstation).startswith("through the traffic manager for 1 of 1"),
            timeout=60,
            interval=0.5,
        )
        assert "403" in inbound(workstation) or "forbidden" in inbound(workstation).lower()
        before = hand_overs(cluster, manager_namespace)
        bodies = requests_answered(cluster, namespace, client)
        assert bodies == [BODY.format(path=f"/{i}") for i in range(REQUESTS)]
        assert hand_overs(cluster, manager_namespace) == before + REQUESTS
        assert workstation.kp("leave", "echo").returncode == 0
