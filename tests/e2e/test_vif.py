"""The workstation joins the cluster network: the VIF, from the workstation namespace ws1.

Scenarios (one `kubepresence connect --mapped-namespaces <ns>` for the module, its own
traffic manager namespace, private XDG dirs):
- `curl http://echo.<ns>`, `http://echo.<ns>.svc.cluster.local`, the ClusterIP, a pod IP,
  and `http://echo` (a mapped namespace, no suffix) all answer from the echo pod;
- a UDP client reaches the UDP echo service by name;
- a 200 MiB download through the VIF is checksum-equal (throughput printed beside the
  direct path from the node, the physical limit, measured in the same run);
- 200 concurrent connections all complete;
- a Service deleted after it was resolved stops resolving once the TTL CoreDNS gave it
  has passed (rootd's cache counts the same TTL down: nothing stale outlives it);
- a name outside the cluster is not hijacked: it goes to the resolver that ws1 had before
  (a recording NXDOMAIN resolver on 127.0.0.1:53 in ws1 during the test) and fails;
- short cluster names (`svc.ns`, `svc.ns.svc`, asked with or without the search list) are
  answered by the cluster, authoritatively: NXDOMAIN ("not known", not "temporary
  failure") for a Service that does not exist, and none of them reaches ws1's own resolver;
- `quit` leaves no TUN device, no route into the cluster ranges, ws1's resolv.conf byte-
  identical to before, and no daemon.
RSS of rootd (idle after connect, peak after the transfers) is printed.

ws1 has one resolv.conf and room for one VIF: the module holds WS1_VIF_LOCK while it is
connected, so concurrent test sessions that connect in ws1 (they should take the same lock)
wait instead of colliding.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kpcluster import kube, layout
from kpcluster.commands import wait_for
from kpcluster.harness import Cluster, EchoWorkload
from workstation_cli import Workstation, ws1_vif_lock
from workstation_servers import PROGRAMS, first_line

WS_RESOLV_CONF = Path("/etc/netns") / layout.WORKSTATION_NETNS / "resolv.conf"
BLOB_MIB = 200
BLOB_PORT = 8080
CONCURRENT = 200
CLUSTER_PREFIXES = ("10.96.", "10.244.")


# A pod that answers every HTTP GET with BLOB_MIB MiB of deterministic bytes: MiB i is a
# seeded random block with i in its first 8 bytes, so a lost or misplaced MiB shows.
BLOB_SERVER = (PROGRAMS / "blob_server.py").read_text()


def blob_digest(mib: int) -> str:
    import random

    block = random.Random(2544).randbytes(1 << 20)
    digest = hashlib.sha256()
    for i in range(mib):
        digest.update(i.to_bytes(8, "big") + block[8:])
    return digest.hexdigest()


def blob_manifests(namespace: str, image: str) -> list[dict[str, Any]]:
    labels = {"app": "blob"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "blob", "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "blob",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": [
                                    "python3",
                                    "-c",
                                    BLOB_SERVER,
                                    str(BLOB_MIB),
                                    str(BLOB_PORT),
                                ],
                                "ports": [{"containerPort": BLOB_PORT}],
                                "readinessProbe": {
                                    "tcpSocket": {"port": BLOB_PORT},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "blob", "namespace": namespace, "labels": labels},
            "spec": {"selector": labels, "ports": [{"port": BLOB_PORT, "targetPort": BLOB_PORT}]},
        },
    ]


def ws_links_and_routes() -> tuple[list[str], list[str]]:
    links = json.loads(
        subprocess.run(
            ["ip", "-j", "-n", layout.WORKSTATION_NETNS, "link", "show"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    )
    routes = json.loads(
        subprocess.run(
            ["ip", "-j", "-n", layout.WORKSTATION_NETNS, "route", "show", "table", "all"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    )
    tuns = [link["ifname"] for link in links if link["ifname"].startswith("kp")]
    cluster_routes = [
        f"{r['dst']} dev {r.get('dev')}"
        for r in routes
        if str(r.get("dst", "")).startswith(CLUSTER_PREFIXES)
        or str(r.get("dev", "")).startswith("kp")
    ]
    return tuns, cluster_routes


@dataclass
class Connected:
    ws: Workstation
    namespace: str
    http: EchoWorkload
    udp: EchoWorkload
    blob_ip: str
    resolv_before: bytes
    idle_memory: dict[str, int]
    manager_namespace: str


@pytest.fixture(scope="module")
def connected(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connected]:
    with ws1_vif_lock():
        yield from _connected(cluster, tmp_path_factory)


def _connected(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connected]:
    resolv_before = WS_RESOLV_CONF.read_bytes()
    assert ws_links_and_routes() == ([], []), "ws1 has kubepresence leftovers before the test"
    manager_namespace = f"kp-mgr-{secrets.token_hex(3)}"
    ws = Workstation(cluster, tmp_path_factory.mktemp("vif-home"))
    with cluster.namespace("vif") as namespace:
        http = cluster.deploy_echo("http", namespace)
        udp = cluster.deploy_echo("udp", namespace)
        cluster.apply(blob_manifests(namespace, cluster.testapps_image))
        kube.wait_rollout("blob", namespace, timeout=120)
        blob_ip = cluster.get("service", "blob", "-n", namespace)["spec"]["clusterIP"]
        try:
            result = ws.kp(
                "connect",
                "--manager-namespace",
                manager_namespace,
                "--mapped-namespaces",
                namespace,
            )
            assert result.returncode == 0, result.stderr + ws.logs()
            memory = ws.rootd_memory()
            yield Connected(
                ws, namespace, http, udp, blob_ip, resolv_before, memory, manager_namespace
            )
        finally:
            ws.kp("quit", timeout=60)
            _uninstall_manager(manager_namespace, cluster)


def _uninstall_manager(name: str, cluster: Cluster) -> None:
    uninstall = [str(PROGRAMS / "uninstall_manager.py"), str(layout.ADMIN_KUBECONFIG), name]
    subprocess.run([sys.executable, *uninstall], check=False, timeout=180)
    cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")


def curl_json(ws: Workstation, url: str) -> dict[str, Any]:
    result = ws.run("curl", "-sS", "--max-time", "20", url, timeout=60)
    assert result.returncode == 0, f"curl {url}: {result.stderr}\n{ws.logs()}"
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_status_shows_the_vif(connected: Connected) -> None:
    result = connected.ws.kp("status", "-o", "json")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "kp0" in text, text  # the VIF's name is reported
    tuns, routes = ws_links_and_routes()
    assert tuns == ["kp0"]
    assert "10.96.0.0/16 dev kp0" in routes
    resolv = WS_RESOLV_CONF.read_text()
    assert "nameserver 10.96.0.10" in resolv
    search = next(line for line in resolv.splitlines() if line.startswith("search "))
    assert f" {connected.namespace}.svc.cluster.local " in search


@pytest.mark.parametrize("how", ["name.ns", "fqdn", "cluster-ip", "pod-ip", "mapped-name"])
def test_http_by_name_cluster_ip_and_pod_ip(connected: Connected, how: str) -> None:
    http, ns = connected.http, connected.namespace
    url = {
        "name.ns": f"http://echo.{ns}/",
        "fqdn": f"http://echo.{ns}.svc.cluster.local/",
        "cluster-ip": f"http://{http.service_ip}/",
        "pod-ip": f"http://{http.pod_ip}:{http.pod_port}/",
        "mapped-name": "http://echo/",
    }[how]
    answer = curl_json(connected.ws, url)
    assert answer["namespace"] == ns
    assert answer["pod"] == http.pod_name


UDP_CLIENT = (PROGRAMS / "udp_client.py").read_text()


def test_udp_echo_by_name(connected: Connected) -> None:
    udp = connected.udp
    result = connected.ws.python(
        UDP_CLIENT, f"udp-echo.{connected.namespace}", str(udp.service_port)
    )
    assert result["address"] == udp.service_ip
    assert result["answers"] == [f"datagram-{i}" for i in range(5)]


DOWNLOAD = (PROGRAMS / "download.py").read_text()


def test_200_mib_download_is_checksum_equal(connected: Connected, cluster: Cluster) -> None:
    expected = blob_digest(BLOB_MIB)
    through_vif = connected.ws.python(DOWNLOAD, f"blob.{connected.namespace}", str(BLOB_PORT))
    assert through_vif["bytes"] == BLOB_MIB << 20
    assert through_vif["sha256"] == expected
    # Baseline from the same run: the node reaches the ClusterIP directly.
    direct = subprocess.run(
        [sys.executable, "-c", DOWNLOAD, connected.blob_ip, str(BLOB_PORT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    baseline = json.loads(direct.stdout)
    assert baseline["sha256"] == expected
    memory = connected.ws.rootd_memory()
    vif_mbs = BLOB_MIB * 1.048576 / through_vif["seconds"]
    node_mbs = BLOB_MIB * 1.048576 / baseline["seconds"]
    print(
        f"\n200 MiB download: through the VIF {vif_mbs:.0f} MB/s "
        f"({through_vif['seconds']:.1f} s), direct from the node {node_mbs:.0f} MB/s; "
        f"rootd RSS idle {connected.idle_memory.get('VmRSS', 0) // 1024} MiB, "
        f"now {memory['VmRSS'] // 1024} MiB, peak {memory['VmHWM'] // 1024} MiB"
    )


CONCURRENT_CLIENT = (PROGRAMS / "concurrent_raw_gets.py").read_text()


def test_200_concurrent_connections_complete(connected: Connected) -> None:
    http = connected.http
    results = connected.ws.python(
        CONCURRENT_CLIENT, http.service_ip, str(http.service_port), str(CONCURRENT)
    )
    failures = [r for r in results if r is not True]
    assert not failures, (
        f"{len(failures)} of {CONCURRENT} failed: {failures[:5]}\n{connected.ws.logs()}"
    )


RECORDING_RESOLVER = (PROGRAMS / "recording_resolver.py").read_text()


def test_a_non_cluster_name_goes_to_the_previous_resolver(
    connected: Connected, cluster: Cluster
) -> None:
    resolver = cluster.start_on_workstation([sys.executable, "-c", RECORDING_RESOLVER])
    try:
        ready = first_line(resolver)
        assert ready == "ready", f"ws1's 127.0.0.1:53 is taken? {ready}"
        result = connected.ws.run("getent", "hosts", "nothere.example")
        assert result.returncode == 2  # not found, and the resolver said so (NXDOMAIN)
    finally:
        resolver.terminate()  # the process this test started, by its handle
        output, _ = resolver.communicate(timeout=10)
    asked = output.split()
    assert "nothere.example." in asked, asked
    assert not any(name.endswith("cluster.local.") for name in asked), asked


SHORT_NAMES = (PROGRAMS / "short_names.py").read_text()


def test_short_cluster_names_are_answered_by_the_cluster_and_never_leak(
    connected: Connected, cluster: Cluster
) -> None:
    namespace, http = connected.namespace, connected.http
    resolver = cluster.start_on_workstation([sys.executable, "-c", RECORDING_RESOLVER])
    try:
        ready = first_line(resolver)
        assert ready == "ready", f"ws1's 127.0.0.1:53 is taken? {ready}"
        result = connected.ws.python(SHORT_NAMES, namespace, http.name)
    finally:
        resolver.terminate()  # the process this test started, by its handle
        output, _ = resolver.communicate(timeout=10)
    # "Name or service not known", not "Temporary failure in name resolution".
    assert result["getaddrinfo"] == {
        f"nosuchsvc.{namespace}": socket.EAI_NONAME,
        f"nosuchsvc.{namespace}.svc": socket.EAI_NONAME,
        f"{http.name}.{namespace}": "ok",
    }
    direct = result["direct"]
    assert direct[f"{http.name}.{namespace}."] == {
        "rcode": 0,
        "aa": 1,
        "answers": [[f"{http.name}.{namespace}.", http.service_ip]],
    }
    assert direct[f"{http.name}.{namespace}.svc."]["answers"] == [
        [f"{http.name}.{namespace}.svc.", http.service_ip]
    ]
    assert direct[f"nosuchsvc.{namespace}."] == {"rcode": 3, "aa": 1, "answers": []}
    leaked = [name for name in output.split() if namespace in name or "cluster.local" in name]
    assert leaked == [], "cluster names reached the workstation's own resolver"


# CoreDNS here gives Service records a TTL of 30 s (`ttl 30`, as kubeadm's Corefile) and
# its cache counts it down; rootd keeps an answer for what is left of it. So a record
# outlives its Service by at most 30 s plus CoreDNS's informer: a cache that ignored the
# TTL or restarted it would keep answering.
STALE_BOUND_S = 45.0


def test_a_deleted_service_stops_resolving_once_its_ttl_is_over(
    connected: Connected, cluster: Cluster
) -> None:
    """rootd keeps cluster answers for their TTL only: nothing stale outlives it."""
    ns = connected.namespace
    name = f"short-lived.{ns}"
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "short-lived", "namespace": ns},
                "spec": {"selector": {"app": "blob"}, "ports": [{"port": 80}]},
            }
        ]
    )
    ip = cluster.get("service", "short-lived", "-n", ns)["spec"]["clusterIP"]

    def resolved() -> str:
        result = connected.ws.run("getent", "hosts", name)
        return result.stdout.split()[0] if result.returncode == 0 else ""

    wait_for(f"{name} to resolve to {ip}", lambda: resolved() == ip, timeout=30)
    cluster.kubectl("delete", "service", "short-lived", "-n", ns)
    # Fails (ClusterError) when the name still resolves after the bound.
    wait_for(f"{name} to stop resolving", lambda: resolved() == "", timeout=STALE_BOUND_S)


MANAGER_LABEL = "app.kubernetes.io/name=kubepresence-manager"


def test_curl_works_again_after_the_manager_restarts(
    connected: Connected, cluster: Cluster
) -> None:
    namespace = connected.manager_namespace

    def manager_pods() -> list[tuple[str, bool]]:
        pods = cluster.get("pods", "-n", namespace, "-l", MANAGER_LABEL)["items"]
        return [
            (
                p["metadata"]["name"],
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions", [])
                ),
            )
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
        ]

    (old, _), *_ = manager_pods()
    cluster.kubectl("delete", "pod", "-n", namespace, old, "--wait=false")
    wait_for(
        "a new manager pod",
        lambda: any(name != old and ready for name, ready in manager_pods()),
        timeout=120,
        interval=1,
    )
    url = f"http://echo.{connected.namespace}/"

    def answers() -> bool:
        result = connected.ws.run("curl", "-sS", "--max-time", "5", url, timeout=30)
        return result.returncode == 0 and f'"namespace": "{connected.namespace}"' in result.stdout

    # No new connect: userd re-establishes the port-forward and the session by itself,
    # and the VIF, untouched, carries the new flows through it.
    wait_for("curl through the VIF after the restart", answers, timeout=120, interval=2)
    assert ws_links_and_routes()[0] == ["kp0"]


def test_a_port_nobody_serves_is_refused_fast(connected: Connected) -> None:
    """The manager's dial is refused in the cluster: the workstation's client gets
    ECONNREFUSED at once (a clear dial error through the tunnel), it does not hang."""
    outcome = connected.ws.python(
        "import json, socket, sys, time\n"
        "started = time.monotonic()\n"
        "try:\n"
        "    socket.create_connection((sys.argv[1], 9), timeout=20).close()\n"
        "    error = None\n"
        "except OSError as e:\n"
        "    error = type(e).__name__\n"
        "print(json.dumps({'error': error, 'seconds': time.monotonic() - started}))\n",
        connected.http.pod_ip,
    )
    assert outcome["error"] == "ConnectionRefusedError"
    assert outcome["seconds"] < 5


def test_quit_leaves_nothing_behind(connected: Connected) -> None:
    """Last in the module: quit, then nothing of the session is left on ws1."""
    result = connected.ws.kp("quit", timeout=60)
    assert result.returncode == 0, result.stderr
    wait_for("rootd to exit", lambda: connected.ws.rootd_pid() is None, timeout=30)
    assert ws_links_and_routes() == ([], [])
    assert WS_RESOLV_CONF.read_bytes() == connected.resolv_before
    run_dir = connected.ws.home / "run" / "kubepresence"
    assert not (run_dir / "rootd.socket").exists()
    assert not (run_dir / "userd.socket").exists()
