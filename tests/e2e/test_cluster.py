"""The local cluster itself works the way kubepresence's tests rely on.

Scenarios:
- The node is Ready and CoreDNS is Available.
- An HTTP echo Deployment and its Service become Ready.
- From a pod, http://echo.<namespace> resolves through cluster DNS to the Service's
  ClusterIP and answers with the echo pod's name, the method, the path and the body length.
- From a pod, the TCP and UDP echo Services echo bytes back.
- A pod has no route off the machine, and a name outside the cluster does not resolve (CoreDNS
  has no upstream); the session's guard check proves no such query left.
- From the workstation namespace, `kubectl get nodes` works through the API server.
- From the workstation, a pod IP and a ClusterIP are NOT reachable (while the host reaches
  both): only the API server is, so anything else must go through kubepresence.
- From the workstation, `kubectl port-forward` to the echo pod works (curl through it).
- The workstation can create a TUN device (room for kubepresence's root daemon).
"""

from __future__ import annotations

import errno
import json
import re
import select
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kpcluster import kube, layout
from kpcluster.harness import Cluster
from workstation_servers import PROGRAMS

UNREACHABLE_TIMEOUT = 3.0
CONNECT_OR_WHY = (PROGRAMS / "connect_or_why.py").read_text()


def in_pod(cluster: Cluster, namespace: str, pod: str, program: str, *args: str) -> Any:
    """Run programs/<program> in a pod with `args`; the one JSON document it prints."""
    code = (PROGRAMS / program).read_text()
    argv = ["python3", "-c", code, *args]
    return json.loads(cluster.exec_in_pod(namespace, pod, argv, timeout=60).stdout)


def test_node_is_ready(cluster: Cluster) -> None:
    node = cluster.get("node", layout.NODE_NAME)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == layout.NODE_IP


def test_coredns_is_available(cluster: Cluster) -> None:
    dep = cluster.get("deployment", "coredns", "-n", "kube-system")
    conditions = {c["type"]: c["status"] for c in dep["status"]["conditions"]}
    assert conditions["Available"] == "True"
    svc = cluster.get("service", "kube-dns", "-n", "kube-system")
    assert svc["spec"]["clusterIP"] == layout.DNS_SERVICE_IP


def test_echo_deployment_and_service_ready(cluster: Cluster, namespace: str) -> None:
    echo = cluster.deploy_echo("http", namespace)
    dep = cluster.get("deployment", "echo", "-n", namespace)
    assert dep["status"]["readyReplicas"] == 1
    slices = cluster.get(
        "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=echo"
    )["items"]
    ready = [
        ep["addresses"][0]
        for s in slices
        for ep in s.get("endpoints") or []
        if ep["conditions"].get("ready")
    ]
    assert ready == [echo.pod_ip]


def test_pod_reaches_echo_by_name_through_cluster_dns(cluster: Cluster, namespace: str) -> None:
    echo = cluster.deploy_echo("http", namespace)
    client = cluster.client_pod(namespace)
    result = in_pod(cluster, namespace, client, "post_by_name.py", f"echo.{namespace}")
    assert result["address"] == echo.service_ip
    assert result["body"]["pod"] == echo.pod_name
    assert result["body"]["namespace"] == namespace
    assert result["body"]["method"] == "POST"
    assert result["body"]["path"] == "/some/path?q=1"
    assert result["body"]["body_length"] == 123


def test_pod_reaches_tcp_and_udp_echo(cluster: Cluster, namespace: str) -> None:
    tcp = cluster.deploy_echo("tcp", namespace)
    udp = cluster.deploy_echo("udp", namespace)
    client = cluster.client_pod(namespace)
    result = in_pod(
        cluster, namespace, client, "tcp_udp_hello.py",
        f"{tcp.name}.{namespace}", str(tcp.service_port),
        f"{udp.name}.{namespace}", str(udp.service_port),
    )  # fmt: skip
    assert result == {"tcp": "hello over tcp", "udp": "hello over udp"}


def test_pod_has_no_way_off_the_machine(cluster: Cluster, namespace: str) -> None:
    client = cluster.client_pod(namespace)
    # connect() on a UDP socket only looks up the route: no packet is sent. 203.0.113.0/24 is
    # TEST-NET-3 (documentation only), and names under .example are reserved: nothing real.
    result = in_pod(cluster, namespace, client, "no_way_off.py")
    assert result["route"] == errno.ENETUNREACH
    assert result["dns"] != "resolved"
    # The same resolver works for cluster names: the failure above is not a broken DNS.
    assert result["cluster_dns"] == layout.API_SERVICE_IP


def test_workstation_kubectl_get_nodes(cluster: Cluster) -> None:
    out = cluster.on_workstation(["kubectl", "get", "nodes", "-o", "name"]).stdout.split()
    assert out == [f"node/{layout.NODE_NAME}"]


def test_workstation_cannot_reach_pod_or_cluster_ip(cluster: Cluster, namespace: str) -> None:
    echo = cluster.deploy_echo("http", namespace)
    targets = [(echo.pod_ip, echo.pod_port), (echo.service_ip, echo.service_port)]
    for ip, port in targets:
        # Control: the addresses are right and the server answers, seen from the host.
        with urllib.request.urlopen(f"http://{ip}:{port}/control", timeout=10) as resp:
            assert json.load(resp)["pod"] == echo.pod_name
        started = time.monotonic()
        argv = [CONNECT_OR_WHY, ip, str(port), str(UNREACHABLE_TIMEOUT)]
        proc = cluster.on_workstation(["python3", "-c", *argv], timeout=30)
        outcome = json.loads(proc.stdout)
        assert outcome != "connected", f"workstation reached {ip}:{port}"
        assert time.monotonic() - started < UNREACHABLE_TIMEOUT + 10


def test_workstation_port_forward_to_echo_pod(cluster: Cluster, namespace: str) -> None:
    echo = cluster.deploy_echo("http", namespace)
    forward = cluster.start_on_workstation(
        [
            "kubectl",
            "port-forward",
            "-n",
            namespace,
            f"pod/{echo.pod_name}",
            f"18080:{echo.pod_port}",
        ]
    )
    try:
        assert forward.stdout is not None
        ready, _, _ = select.select([forward.stdout], [], [], 30)
        assert ready, "kubectl port-forward printed nothing within 30 s"
        first = forward.stdout.readline()  # "Forwarding from 127.0.0.1:18080 -> 8080"
        assert re.match(r"Forwarding from 127\.0\.0\.1:18080", first), first
        out = cluster.on_workstation(
            [
                "curl",
                "-sS",
                "--max-time",
                "10",
                "-H",
                "X-Test: port-forward",
                "http://127.0.0.1:18080/through/pf",
            ]
        ).stdout
        body = json.loads(out)
        assert body["pod"] == echo.pod_name
        assert body["path"] == "/through/pf"
        assert body["headers"]["X-Test"] == "port-forward"
    finally:
        forward.terminate()
        try:
            forward.wait(timeout=10)
        except subprocess.TimeoutExpired:
            forward.kill()
            forward.wait(timeout=10)


def test_workstation_can_create_a_tun_device(cluster: Cluster) -> None:
    if not Path("/dev/net/tun").exists():
        pytest.skip("machine has no /dev/net/tun")
    cluster.on_workstation(["ip", "tuntap", "add", "dev", "kptest0", "mode", "tun"])
    try:
        links = cluster.on_workstation(["ip", "-j", "link", "show", "dev", "kptest0"]).stdout
        assert json.loads(links)[0]["ifname"] == "kptest0"
    finally:
        cluster.on_workstation(["ip", "link", "del", "kptest0"], check=False)


def test_admin_kubeconfig_points_at_the_lab_address(cluster: Cluster) -> None:
    server = kube.kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    )
    assert server == layout.API_URL
