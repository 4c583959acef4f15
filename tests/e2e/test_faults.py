"""Daemons that die under a live session, on the real cluster (issue 14, item 4).

Scenario (the daemons killed or frozen in every state: test_fault_suite.py):
- The traffic manager's pod is deleted during a global intercept of one workload and a
  personal intercept of another: both come back by themselves within a bounded time (the
  cluster pod's requests reach the workstation again, the personal one only with its
  header), and `status` says they were made again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from kpcluster.commands import ClusterError, wait_for
from kpcluster.harness import Cluster
from workstation_cli import Workstation, delete_manager_pods
from workstation_servers import answering_server, get_from_pod

LOCAL_PORTS = {"echo": 8093, "web": 8094}


@pytest.fixture
def local_servers(cluster: Cluster) -> Iterator[None]:
    with contextlib.ExitStack() as servers:
        for name, port in LOCAL_PORTS.items():
            servers.enter_context(answering_server(cluster, port, f"workstation {name}"))
        yield


def ask(cluster: Cluster, namespace: str, pod: str, workload: str, **headers: str) -> str:
    answer = get_from_pod(cluster, namespace, pod, f"http://{workload}.{namespace}/", headers, 5)
    return str(answer["body"]) if "body" in answer else f"no answer: {answer}"


def test_intercepts_come_back_after_the_manager_restarts(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_servers: None,
) -> None:
    for workload in LOCAL_PORTS:
        cluster.deploy_echo("http", namespace, name=workload, named_target_port=True)
    client = cluster.client_pod(namespace)
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.logs()
    for workload, extra in (("echo", []), ("web", ["--http-header", "x-dev=me"])):
        made = workstation.kp(
            "intercept",
            workload,
            "--port",
            f"{LOCAL_PORTS[workload]}:http",
            "-n",
            namespace,
            *extra,
            timeout=240,
        )
        assert made.returncode == 0, made.stderr + workstation.logs()

    def all_come_here() -> bool:
        return (
            ask(cluster, namespace, client, "echo") == "workstation echo"
            and ask(cluster, namespace, client, "web", **{"x-dev": "me"}) == "workstation web"
            and ask(cluster, namespace, client, "web").startswith("{")  # the app's JSON
        )

    wait_for("the intercepts to take the traffic", all_come_here, timeout=30, interval=0.5)
    deleted = time.monotonic()
    delete_manager_pods(cluster, manager_namespace)
    try:
        wait_for("the intercepts to come back", all_come_here, timeout=120, interval=1)
    except ClusterError as error:
        logs = [
            cluster.kubectl("logs", "-n", ns, "-l", selector, "--all-containers", "--tail=40")
            for ns, selector in (
                (manager_namespace, "app.kubernetes.io/name=kubepresence-manager"),
                (namespace, "app in (echo,web)"),
            )
        ]
        raise AssertionError(f"{error}\n{workstation.logs()}\n" + "\n".join(logs)) from None
    print(f"intercepts back {time.monotonic() - deleted:.1f} s after the manager pod's deletion")
    events = workstation.status()["connection"]["events"]  # type: ignore[index]
    for workload in LOCAL_PORTS:
        assert any(f"intercept {workload} made again" in e for e in events), events
