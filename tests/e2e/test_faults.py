"""Daemons that die under a live session, on the real cluster (issue 14, item 4).

Scenarios:
- rootd is SIGKILLed while connected: within seconds its guardian has put ws1's
  resolv.conf back byte for byte (the workstation's lookups work again without the
  cluster) and the TUN device is gone; userd notices, `status` says the cluster network is
  down and why and exits non-zero; `connect` starts a new rootd and joins it (not "already
  connected"): a Service answers by name again, `status` exits 0; `quit` leaves ws1's
  resolv.conf as it was and no guardian behind.
- After a clean `quit`, the guardian exits with its rootd (nothing to restore).
- The traffic manager's pod is deleted during a global intercept of one workload and a
  personal intercept of another: both come back by themselves within a bounded time (the
  cluster pod's requests reach the workstation again, the personal one only with its
  header), and `status` says they were made again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kpcluster import layout
from kpcluster.commands import ClusterError, wait_for
from kpcluster.harness import Cluster
from workstation_cli import Workstation, command_lines, delete_manager_pods
from workstation_servers import answering_server, get_from_pod

WS_RESOLV_CONF = Path("/etc/netns") / layout.WORKSTATION_NETNS / "resolv.conf"


def guardians_of(rootd_pid: int) -> list[int]:
    """The guardian processes started by that rootd."""
    needle = f"--rootd={rootd_pid}".encode()
    return [
        pid
        for pid, argv in command_lines()
        if b"kubepresence.rootd.guardian" in argv and needle in argv
    ]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def status_code(ws: Workstation) -> tuple[int, dict[str, object]]:
    result = ws.kp("status", "-o", "json")
    return result.returncode, dict(json.loads(result.stdout))


@pytest.fixture
def echo(cluster: Cluster, namespace: str) -> str:
    cluster.deploy_echo("http", namespace)
    return f"http://echo.{namespace}/x"


def test_a_killed_rootd_is_undone_at_once_and_connect_rejoins(
    cluster: Cluster, workstation: Workstation, manager_namespace: str, echo: str
) -> None:
    before = WS_RESOLV_CONF.read_bytes()
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.logs()
    assert WS_RESOLV_CONF.read_bytes() != before  # rewritten for the cluster
    rootd = workstation.rootd_pid()
    assert rootd is not None
    guardians = guardians_of(rootd)
    assert len(guardians) == 1, guardians

    os.kill(rootd, signal.SIGKILL)  # the process this test's session started, by pid

    wait_for(
        "ws1's resolv.conf restored by the guardian",
        lambda: WS_RESOLV_CONF.read_bytes() == before,
        timeout=5,
        interval=0.1,
    )
    wait_for("the guardian to exit", lambda: not alive(guardians[0]), timeout=5, interval=0.1)
    links = cluster.on_workstation(["ip", "-o", "link"]).stdout
    assert "kp0" not in links

    def reported() -> tuple[int, dict[str, object]] | None:
        code, state = status_code(workstation)
        connection = state.get("connection")
        assert isinstance(connection, dict)
        return (code, state) if connection.get("network_problem") else None

    code, state = wait_for("userd to notice", reported, timeout=10, interval=0.5)
    assert code == 3, state
    connection = state["connection"]
    assert isinstance(connection, dict)
    assert connection["state"] == "connected"  # the session lives on: intercepts too
    assert str(connection["network_problem"]).startswith("the root daemon stopped")
    assert state["root_daemon"] == {"running": False}

    again = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert again.returncode == 0, again.stderr + workstation.logs()
    code, state = status_code(workstation)
    assert code == 0, state
    assert "network_problem" not in state["connection"]  # type: ignore[operator]
    answer = workstation.run("curl", "-sS", "--max-time", "20", echo)
    assert answer.returncode == 0, answer.stderr + workstation.logs()
    assert json.loads(answer.stdout)["pod"].startswith("echo-")
    new_rootd = workstation.rootd_pid()
    assert new_rootd is not None
    assert new_rootd != rootd

    quitted = workstation.kp("quit", timeout=60)
    assert quitted.returncode == 0, quitted.stderr
    assert WS_RESOLV_CONF.read_bytes() == before
    wait_for(
        "the new rootd's guardian to exit with it",
        lambda: not [g for g in guardians_of(new_rootd) if alive(g)],
        timeout=10,
        interval=0.2,
    )


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
