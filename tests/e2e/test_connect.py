"""`kubepresence connect` from the workstation, against the real cluster.

Scenarios (the session half of connect; routing through the VIF has its own tests):
- on a cluster without a traffic manager in the chosen namespace, `connect` installs it,
  connects, and `status -o json` shows the session, the cluster's subnets and DNS;
- `connect` again while connected: one line, exit code 2 (bad input), still connected;
- `connect --no-install` where no manager runs: one line, exit code 3, no daemon state;
- an unknown `--context`: one line, exit code 3;
- `connect -n` (or `--mapped-namespaces`) naming a namespace that does not exist: one
  line, exit code 2, and no traffic manager installed for it;
- an unknown `KUBEPRESENCE_PORT_FORWARD`: one line, exit code 3, not connected; by default
  the port-forward speaks SPDY, and `status` says so;
- the manager pod is deleted while connected: the session comes back by itself and
  `status` lists what happened, with the port-forward over SPDY and over WebSocket
  (`KUBEPRESENCE_PORT_FORWARD`);
- `quit`: the daemons stop and their sockets are gone;
- `connect -- CMD`: CMD runs on the cluster network (cluster names resolve), the command's
  exit code is `connect`'s, and nothing it started stays: no daemons, sockets or TUN device.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kpcluster import layout
from kpcluster.harness import Cluster
from workstation_cli import Workstation, delete_manager_pods


def test_connect_installs_the_manager_and_reports_the_session(
    workstation: Workstation, manager_namespace: str
) -> None:
    result = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert result.returncode == 0, result.stderr + workstation.log("userd")
    assert "Connected to context" in result.stdout
    status = workstation.status()
    connection = status["connection"]
    assert isinstance(connection, dict)
    assert connection["state"] == "connected"
    assert connection["manager_namespace"] == manager_namespace
    assert str(connection["session"]).startswith("client-")
    cluster_info = connection["cluster"]
    assert cluster_info["service_subnets"] == ["10.96.0.0/16"]
    assert cluster_info["pod_subnets"] == ["10.244.0.0/24"]
    assert cluster_info["dns_service_ip"] == "10.96.0.10"
    assert cluster_info["cluster_domain"] == "cluster.local"
    assert any("port-forward over spdy" in e for e in connection["events"]), connection

    # The same connect again is done already; another one is refused until quit.
    again = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Connected to context"), again.stdout
    other = workstation.kp("connect", "--manager-namespace", "elsewhere")
    assert other.returncode == 2
    assert len(other.stderr.strip().splitlines()) == 1, other.stderr
    assert "already connected" in other.stderr
    assert workstation.status()["connection"]["state"] == "connected"  # type: ignore[index]


@pytest.mark.parametrize("protocol", ["spdy", "websocket"])
def test_manager_restart_is_ridden_out(
    cluster: Cluster, workstation: Workstation, manager_namespace: str, protocol: str
) -> None:
    workstation.env["KUBEPRESENCE_PORT_FORWARD"] = protocol
    assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0
    connection = workstation.status()["connection"]
    assert isinstance(connection, dict)
    assert any(f"port-forward over {protocol}" in e for e in connection["events"]), connection
    first = connection["session"]
    delete_manager_pods(cluster, manager_namespace, wait=False)
    deadline = time.monotonic() + 120
    events: list[str] = []
    while time.monotonic() < deadline:
        connection = workstation.status()["connection"]
        assert isinstance(connection, dict)
        events = list(connection["events"])
        if connection["session"] != first and any("arrived again" in e for e in events):
            break
        time.sleep(2)
    else:
        pytest.fail(f"the session did not come back: {events}\n{workstation.log('userd')}")
    assert any("forgot the session" in e or "lost the traffic manager" in e for e in events)


def test_no_install_without_manager_is_a_config_error(
    workstation: Workstation, manager_namespace: str
) -> None:
    result = workstation.kp("connect", "--no-install", "--manager-namespace", manager_namespace)
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--no-install" in result.stderr
    assert workstation.status()["connection"] == {"state": "disconnected"}


def test_unknown_context_is_a_config_error(workstation: Workstation) -> None:
    result = workstation.kp("connect", "--context", "no-such-context")
    assert result.returncode == 3, result.stderr
    assert "context 'no-such-context' is not in the kubeconfig" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("flag", ["-n", "--mapped-namespaces"])
def test_a_namespace_that_does_not_exist_is_refused_before_anything_is_installed(
    cluster: Cluster, workstation: Workstation, manager_namespace: str, flag: str
) -> None:
    result = workstation.kp(
        "connect", "--manager-namespace", manager_namespace, flag, "no-such-namespace"
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "kubepresence: namespace 'no-such-namespace' does not exist in context"
        " 'kubepresence-developer@kubepresence' (kubectl get namespaces lists those that do)"
    ]
    assert workstation.status()["connection"] == {"state": "disconnected"}
    names = cluster.kubectl("get", "namespaces", "-o", "name").split()
    assert f"namespace/{manager_namespace}" not in names


def test_unknown_port_forward_protocol_is_a_config_error(workstation: Workstation) -> None:
    workstation.env["KUBEPRESENCE_PORT_FORWARD"] = "http3"
    try:
        result = workstation.kp("connect")
    finally:
        del workstation.env["KUBEPRESENCE_PORT_FORWARD"]
    assert result.returncode == 3, result.stderr
    assert "KUBEPRESENCE_PORT_FORWARD must be one of auto, spdy, websocket" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert workstation.status()["connection"] == {"state": "disconnected"}


def test_unreachable_api_server_is_a_cluster_error(
    workstation: Workstation, tmp_path: Path
) -> None:
    # A port of the lab's API server address that nothing serves (the guard drops it).
    bad = tmp_path / "unreachable.conf"
    bad.write_text(layout.WORKSTATION_KUBECONFIG.read_text().replace(":6443", ":6555"))
    result = workstation.kp("connect", "--kubeconfig", str(bad), timeout=120)
    assert result.returncode == 4, result.stderr
    assert "cannot reach the API server" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert workstation.status()["connection"] == {"state": "disconnected"}


def test_subnet_conflict_is_refused_with_nothing_applied(
    cluster: Cluster, workstation: Workstation, manager_namespace: str
) -> None:
    # 10.77.0.0/24 is the workstation's own LAN: routing it through the VIF would cut it off.
    result = workstation.kp(
        "connect", "--manager-namespace", manager_namespace, "--also-proxy", "10.77.0.0/24"
    )
    assert result.returncode == 3, result.stderr
    assert "overlaps the local route 10.77.0.0/24 via eth0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert workstation.status()["connection"] == {"state": "disconnected"}
    links = cluster.on_workstation(["ip", "-o", "link"]).stdout
    assert "kp0" not in links


def test_connect_runs_a_command_on_the_cluster_network_and_leaves_nothing(
    cluster: Cluster, workstation: Workstation, manager_namespace: str, tmp_path: Path
) -> None:
    result = workstation.kp(
        "connect",
        "--manager-namespace",
        manager_namespace,
        "--",
        "sh",
        "-c",
        "getent hosts kubernetes.default.svc.cluster.local && exit 7",
    )
    assert result.returncode == 7, result.stderr + workstation.log("userd")
    assert result.stdout.splitlines()[-1].split()[0] == "10.96.0.1"  # the cluster's DNS
    state = workstation.status()
    assert state["user_daemon"] == {"running": False}
    assert state["root_daemon"] == {"running": False}
    assert list((tmp_path / "run" / "kubepresence").glob("*.socket")) == []
    links = cluster.on_workstation(["ip", "-o", "link", "show"]).stdout
    assert " kp0:" not in links, links
