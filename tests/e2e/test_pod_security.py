"""`kubepresence intercept` in namespaces under Pod Security Admission, on the real cluster.

The local API server runs PodSecurity (on by default); each test labels its namespace and
deploys an echo app (and a client pod) that meets the `restricted` standard, so the app
itself is admitted everywhere.

Scenarios:
- the API server really enforces: in `restricted` and `baseline` namespaces it refuses a
  pod whose init container adds NET_ADMIN and NET_RAW (server-side dry run; its message
  is recorded), and admits it where only `warn`/`audit` labels are set;
- `restricted` and `baseline`: an intercept of a port its Service targets by number (the
  NET_ADMIN init container would be needed) is refused in one line naming the port, the
  level and what to do instead, exit code 2, and leaves the Deployment (generation,
  template, annotations), its ReplicaSets and its pods exactly as they were: no
  annotation, no rollout, no agent, no intercept;
- there, once the Service targets the port by name (the remedy the line gives), the
  intercept works: the new pod passed admission with the agent sidecar (no init container,
  the agent's security context as `restricted` asks) and a request from a pod in the
  cluster reaches the workstation;
- `privileged`, and a namespace with only `warn`/`audit` labels: both mechanisms work, an
  intercept by name (sidecar only) and then by number (the init container redirects);
- a user who may do everything an intercept needs but read namespaces: userd cannot check
  the labels up front, so the manager annotates the workload and the API server refuses
  its new pods; userd sees the Deployment's ReplicaFailure, puts the pod template back and
  says so in one line (exit 2): the template and annotations are as before, the running pod
  is the same one, without an agent, and no intercept is left (only an empty ReplicaSet of
  the refused template remains, as after any rollback); a StatefulSet (which says so only
  in FailedCreate events, and has already stopped its pod) is restored the same way and
  its pod comes back without the agent.
"""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kpcluster import kube, layout, manifests
from kpcluster.commands import run
from kpcluster.harness import Cluster
from workstation_cli import Workstation
from workstation_servers import answering_server, get_from_pod

LOCAL_PORT = 8090
ECHO_PORT = 8080  # manifests.ECHO_KINDS["http"]: the container port, targeted by number
AGENT = "kubepresence-agent"
INIT = "kubepresence-init"
ENFORCE = "pod-security.kubernetes.io/enforce"


# kube-proxy applies an EndpointSlice change up to a second after it (its minimum sync
# period; seen: a request 0.2 s after `intercept` returned went to the old pod, which had
# stopped listening): until then a connection may be refused. Only that is retried, for
# at most 10 s; the attempts are reported.
KUBE_PROXY_SYNC = 10.0

POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532}
SECCOMP = {"seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def restricted(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` (a Pod or a workload) with the security context the restricted level asks."""
    obj = copy.deepcopy(obj)
    if obj["kind"] in ("Deployment", "StatefulSet", "ReplicaSet"):
        spec = obj["spec"]["template"]["spec"]
    elif obj["kind"] == "Pod":
        spec = obj["spec"]
    else:
        return obj
    spec["securityContext"] = {**POD_SECURITY, **SECCOMP}
    for container in spec["containers"]:
        container["securityContext"] = dict(CONTAINER_SECURITY)
    return obj


def label(cluster: Cluster, namespace: str, labels: dict[str, str]) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "--overwrite", *(f"{k}={v}" for k, v in labels.items())
    )


def deploy(cluster: Cluster, namespace: str, *, named_target_port: bool) -> str:
    """The restricted-ready echo app and client pod; returns the client pod's name."""
    objects = manifests.echo("http", "echo", namespace, cluster.testapps_image)
    if named_target_port:
        objects[1]["spec"]["ports"][0]["targetPort"] = "http"
    client = manifests.client_pod("client", namespace, cluster.testapps_image)
    cluster.apply([restricted(o) for o in [*objects, client]])
    kube.wait_rollout("echo", namespace)
    kube.wait_pod_ready("client", namespace)
    return "client"


def target_port(cluster: Cluster, namespace: str, target: str | int) -> None:
    """Point the echo Service's port at the container port by name or by number."""
    patch = [{"op": "replace", "path": "/spec/ports/0/targetPort", "value": target}]
    cluster.kubectl(
        "patch", "service", "echo", "-n", namespace, "--type=json", "-p", json.dumps(patch)
    )


def get(cluster: Cluster, namespace: str, client: str, path: str) -> dict[str, Any]:
    url = f"http://echo.{namespace}{path}"
    return get_from_pod(cluster, namespace, client, url, retry_refused=KUBE_PROXY_SYNC)


def snapshot(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """What an intercept would change on the echo app: its Deployment, ReplicaSets, pods."""
    deployment = cluster.get("deployment", "echo", "-n", namespace)
    replica_sets = cluster.get("replicasets", "-n", namespace, "-l", "app=echo")["items"]
    pods = cluster.get("pods", "-n", namespace, "-l", "app=echo")["items"]
    return {
        "generation": deployment["metadata"]["generation"],
        "annotations": deployment["metadata"].get("annotations") or {},
        "template": deployment["spec"]["template"],
        "replica_sets": sorted(
            (r["metadata"]["uid"], r["metadata"]["name"], r["spec"].get("replicas"))
            for r in replica_sets
        ),
        "pods": sorted(
            (
                p["metadata"]["uid"],
                p["metadata"]["name"],
                tuple(c["name"] for c in p["spec"]["containers"]),
                tuple(c["name"] for c in p["spec"].get("initContainers") or []),
                bool(p["metadata"].get("deletionTimestamp")),
            )
            for p in pods
        ),
    }


def live_pod(cluster: Cluster, namespace: str) -> dict[str, Any]:
    [pod] = cluster.wait_pods_ready(namespace, "app=echo", 1)
    return pod


def intercepts(workstation: Workstation, namespace: str) -> list[dict[str, Any]]:
    listed = workstation.kp("list", "-n", namespace, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    workloads = {w["name"]: w for w in json.loads(listed.stdout)["workloads"]}
    return list(workloads["echo"]["intercepts"])


@pytest.fixture
def local_server(cluster: Cluster, workstation: Workstation) -> Iterator[None]:
    """An HTTP server on the workstation's 127.0.0.1:8090, listening when this yields."""
    with answering_server(cluster, LOCAL_PORT, "workstation says hi to {path}"):
        yield


def intercept_reaches_workstation(
    cluster: Cluster, workstation: Workstation, namespace: str, client: str, how: str
) -> dict[str, Any]:
    """Intercept echo's only Service port (`how` the Service targets it: "name" or
    "number"), prove a cluster request reaches the workstation, leave; returns the
    intercepted pod."""
    started = time.monotonic()
    result = workstation.kp("intercept", "echo", "--port", str(LOCAL_PORT), "-n", namespace)
    assert result.returncode == 0, result.stderr + workstation.logs()
    print(f"intercept of a port targeted by {how} took {time.monotonic() - started:.1f} s")
    pod = live_pod(cluster, namespace)
    answer = get(cluster, namespace, client, f"/by-{how}")
    attempts = answer.pop("attempts")
    assert answer == {"status": 200, "body": f"workstation says hi to /by-{how}"}, answer
    print(f"the workstation answered at attempt {attempts}")
    assert workstation.kp("leave", "echo").returncode == 0
    return pod


def dry_run_net_admin_pod(cluster: Cluster, namespace: str) -> subprocess.CompletedProcess[str]:
    """A server-side dry run of a pod with an init container like the agent's."""
    pod = restricted(manifests.client_pod("net-admin", namespace, cluster.testapps_image))
    pod["spec"]["initContainers"] = [
        {
            "name": "redirect",
            "image": cluster.testapps_image,
            "imagePullPolicy": "Never",
            "command": ["true"],
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": False,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
            },
        }
    ]
    return run(
        [
            layout.kubectl(),
            "--kubeconfig",
            layout.ADMIN_KUBECONFIG,
            "create",
            "--dry-run=server",
            "-f",
            "-",
        ],
        input_text=json.dumps(pod),
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("level", ["restricted", "baseline"])
def test_numeric_port_refused_untouched_and_named_port_works(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_server: None,
    level: str,
) -> None:
    label(cluster, namespace, {ENFORCE: level})
    refused_pod = dry_run_net_admin_pod(cluster, namespace)
    assert refused_pod.returncode != 0, refused_pod.stdout
    assert f'violates PodSecurity "{level}:latest"' in refused_pod.stderr, refused_pod.stderr
    assert '"NET_ADMIN", "NET_RAW"' in refused_pod.stderr, refused_pod.stderr
    print(f"API server, {level}: {refused_pod.stderr.strip()}")

    client = deploy(cluster, namespace, named_target_port=False)
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.logs()

    before = snapshot(cluster, namespace)
    started = time.monotonic()
    result = workstation.kp("intercept", "echo", "--port", str(LOCAL_PORT), "-n", namespace)
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr + workstation.logs()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for part in (
        f"port {ECHO_PORT} of deployment/echo",
        "service echo targets it by number",
        "NET_ADMIN",
        f'enforces Pod Security "{level}"',
        "make service echo target it by name",
        "or intercept in a namespace that allows it",
    ):
        assert part in lines[0], (part, lines[0])
    assert seconds < 30, f"the refusal took {seconds:.1f} s"
    print(f"refused in {seconds:.1f} s: {lines[0]}")
    assert snapshot(cluster, namespace) == before
    assert intercepts(workstation, namespace) == []

    # The remedy the line gives: the Service targets the port by name.
    target_port(cluster, namespace, "http")
    pod = intercept_reaches_workstation(cluster, workstation, namespace, client, "name")
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert AGENT in containers, list(containers)
    assert not pod["spec"].get("initContainers"), pod["spec"]["initContainers"]
    security = containers[AGENT]["securityContext"]
    assert security == {
        **security,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }, security
    assert security["runAsUser"] != 0


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param({ENFORCE: "privileged"}, id="privileged"),
        pytest.param(
            {
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
            id="warn-audit-only",
        ),
    ],
)
def test_both_takeovers_work_where_nothing_forbids_them(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_server: None,
    labels: dict[str, str],
) -> None:
    label(cluster, namespace, labels)
    admitted = dry_run_net_admin_pod(cluster, namespace)
    assert admitted.returncode == 0, admitted.stderr
    client = deploy(cluster, namespace, named_target_port=True)
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.logs()

    named = intercept_reaches_workstation(cluster, workstation, namespace, client, "name")
    assert AGENT in [c["name"] for c in named["spec"]["containers"]]
    assert not named["spec"].get("initContainers")

    target_port(cluster, namespace, ECHO_PORT)
    numeric = intercept_reaches_workstation(cluster, workstation, namespace, client, "number")
    assert AGENT in [c["name"] for c in numeric["spec"]["containers"]]
    assert [c["name"] for c in numeric["spec"].get("initContainers") or []] == [INIT]


# Everything an intercept touches, but not namespaces (RBAC cannot deny: it lists).
CORE_RESOURCES = [
    "pods",
    "pods/log",
    "pods/exec",
    "pods/portforward",
    "pods/status",
    "services",
    "endpoints",
    "configmaps",
    "secrets",
    "serviceaccounts",
    "events",
    "nodes",
]
OTHER_GROUPS = [
    "apps",
    "discovery.k8s.io",
    "events.k8s.io",
    "rbac.authorization.k8s.io",
    "admissionregistration.k8s.io",
    "coordination.k8s.io",
]


@pytest.fixture
def no_namespace_reader(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for a ServiceAccount that may not read namespaces."""
    name = f"kp-no-ns-{secrets.token_hex(3)}"
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "limited", "namespace": namespace},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": [
                    {"apiGroups": [""], "resources": CORE_RESOURCES, "verbs": ["*"]},
                    {"apiGroups": OTHER_GROUPS, "resources": ["*"], "verbs": ["*"]},
                    {"nonResourceURLs": ["*"], "verbs": ["get"]},
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": namespace}],
            },
        ]
    )
    try:
        token = cluster.kubectl(
            "create", "token", "limited", "-n", namespace, "--duration=1h"
        ).strip()
        config = yaml.safe_load(layout.WORKSTATION_KUBECONFIG.read_text())
        config["users"] = [{"name": "limited", "user": {"token": token}}]
        config["contexts"][0]["context"]["user"] = "limited"
        path = tmp_path / "limited.conf"
        path.write_text(yaml.safe_dump(config))
        denied = kube.kubectl(
            "auth", "can-i", "get", f"namespace/{namespace}", kubeconfig=path, check=False
        )
        assert denied.strip() == "no", denied
        yield path
    finally:
        cluster.kubectl("delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found")


def connect_as(workstation: Workstation, manager_namespace: str, kubeconfig: Path) -> None:
    """Connect with `kubeconfig`; the administrator installs the manager first."""
    installed = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert installed.returncode == 0, installed.stderr + workstation.logs()
    assert workstation.kp("quit").returncode == 0
    workstation.env["KUBECONFIG"] = str(kubeconfig)
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.logs()


def test_refused_pods_roll_back_when_namespaces_cannot_be_read(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    no_namespace_reader: Path,
) -> None:
    label(cluster, namespace, {ENFORCE: "restricted"})
    deploy(cluster, namespace, named_target_port=False)
    connect_as(workstation, manager_namespace, no_namespace_reader)

    before = snapshot(cluster, namespace)
    started = time.monotonic()
    result = workstation.kp("intercept", "echo", "--port", str(LOCAL_PORT), "-n", namespace)
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr + workstation.logs()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for part in (
        f"the API server refused the agent's pods of {namespace}/deployment/echo",
        "so the intercept was rolled back",
        'violates PodSecurity "restricted:latest"',
        f'container "{INIT}" must not include "NET_ADMIN", "NET_RAW"',
    ):
        assert part in lines[0], (part, lines[0])
    print(f"refused by the API server and rolled back in {seconds:.1f} s: {lines[0]}")
    assert "Pod Security is checked when its pods are created" in workstation.log("userd")

    after = snapshot(cluster, namespace)
    assert after["template"] == before["template"]
    assert after["pods"] == before["pods"]  # the same pod, never replaced, no agent
    assert intercepts(workstation, namespace) == []
    # The refused template's ReplicaSet stays as revision history, scaled to 0.
    added = [r for r in after["replica_sets"] if r not in before["replica_sets"]]
    assert [r[2] for r in added] == [0], after["replica_sets"]


def test_refused_statefulset_pod_comes_back_without_agent(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    no_namespace_reader: Path,
) -> None:
    label(cluster, namespace, {ENFORCE: "restricted"})
    objects = manifests.echo_workload("StatefulSet", "echo", namespace, cluster.testapps_image)
    cluster.apply([restricted(o) for o in objects])
    cluster.wait_pods_ready(namespace, "app=echo", 1)
    connect_as(workstation, manager_namespace, no_namespace_reader)

    template = cluster.get("statefulset", "echo", "-n", namespace)["spec"]["template"]
    started = time.monotonic()
    result = workstation.kp("intercept", "echo", "--port", str(LOCAL_PORT), "-n", namespace)
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stdout + result.stderr + workstation.logs()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"refused the agent's pods of {namespace}/statefulset/echo" in lines[0], lines[0]
    assert 'violates PodSecurity "restricted:latest"' in lines[0], lines[0]
    print(f"statefulset: refused and rolled back in {seconds:.1f} s: {lines[0]}")
    assert cluster.get("statefulset", "echo", "-n", namespace)["spec"]["template"] == template
    assert intercepts(workstation, namespace) == []
    # A StatefulSet stops the pod it replaces first: it starts it again, as it was.
    [pod] = cluster.wait_pods_ready(namespace, "app=echo", 1)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["echo"]
