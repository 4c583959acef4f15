"""`kubepresence intercept` on the real cluster: cluster traffic reaches the workstation.

Scenarios (global intercepts; personal ones, mounts and previews have their own issues):
- a pod in the cluster calls the echo Service; after `intercept echo --port 8090:http`
  it gets the answer of an HTTP server on the workstation (the agent was injected on
  demand); after `leave echo` the cluster pod answers again;
- `intercept … -- CMD` runs CMD with the app container's environment (its POD_NAME) and
  returns CMD's exit code, and the intercept ends with it;
- with nothing listening on the workstation, the caller in the cluster fails fast;
- a second intercept of the same port is refused with one clear line;
- an intercept of another workload to the same local port is refused in one line naming
  the intercept that has it, and nothing is applied to that workload; with
  `--share-local-port` it is made;
- `list` shows the intercept and its state;
- the kubelet's readiness probe of an intercepted (numeric, redirected) port keeps asking
  the app: a workstation server that answers its `/ready` with 404 neither fails the
  intercept (the new pod must get Ready) nor drops the pod from the Service; and no probe
  (the app's or the agent's own) becomes a connection to the workstation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kpcluster import kube
from kpcluster.harness import Cluster
from workstation_cli import Workstation
from workstation_servers import PROGRAMS, answering_server, first_line

LOCAL_PORT = 8090
BODY = "workstation says hi to {path}"
COUNTING_SERVER = PROGRAMS / "counting_file_server.py"
GET = (PROGRAMS / "timed_get.py").read_text()


@pytest.fixture
def local_server(cluster: Cluster) -> Iterator[subprocess.Popen[str]]:
    with answering_server(cluster, LOCAL_PORT, BODY) as process:
        yield process


def echo_intercepts(workstation: Workstation, namespace: str) -> list[dict[str, str]]:
    """The intercepts `list` shows on the echo workload."""
    listed = workstation.kp("list", "-n", namespace, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    workloads = {w["name"]: w for w in json.loads(listed.stdout)["workloads"]}
    return list(workloads["echo"]["intercepts"])


def get_from_pod(cluster: Cluster, namespace: str, pod: str, url: str) -> dict[str, object]:
    result = cluster.exec_in_pod(namespace, pod, ["python3", "-c", GET, url], timeout=60)
    return dict(json.loads(result.stdout))


def test_intercept_and_leave(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_server: subprocess.Popen[str],
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    client = cluster.client_pod(namespace)
    url = f"http://echo.{namespace}/before"
    before = get_from_pod(cluster, namespace, client, url)
    assert before["status"] == 200
    assert json.loads(str(before["body"]))["pod"].startswith("echo-")

    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.log("userd")
    started = time.monotonic()
    result = workstation.kp(
        "intercept", "echo", "--port", f"{LOCAL_PORT}:http", "-n", namespace, timeout=240
    )
    assert result.returncode == 0, result.stderr + workstation.log("userd")
    intercept_seconds = time.monotonic() - started
    assert "Intercepting" in result.stdout

    assert [i["state"] for i in echo_intercepts(workstation, namespace)] == ["active"]

    during = get_from_pod(cluster, namespace, client, f"http://echo.{namespace}/during")
    assert during == {**during, "status": 200, "body": "workstation says hi to /during"}

    again = workstation.kp(
        "intercept", "echo", "--port", f"{LOCAL_PORT}:http", "-n", namespace, "--name", "second"
    )
    assert again.returncode == 2, again.stderr
    assert "already intercepted" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    # Another workload to the same local port: its traffic would mix with echo's.
    cluster.deploy_echo("http", namespace, name="other", named_target_port=True)
    mixed = workstation.kp("intercept", "other", "--port", f"{LOCAL_PORT}:http", "-n", namespace)
    assert mixed.returncode == 2, mixed.stderr
    assert mixed.stderr.strip().splitlines() == [
        f"kubepresence: local port {LOCAL_PORT} already receives intercept 'echo'"
        f" ({namespace}/echo): pick another local port, or pass --share-local-port to send"
        " both there"
    ]
    template = cluster.get("deployment", "other", "-n", namespace)["spec"]["template"]
    assert "kubepresence.io/inject-traffic-agent" not in template["metadata"].get("annotations", {})
    assert [i["state"] for i in echo_intercepts(workstation, namespace)] == ["active"]
    shared = workstation.kp(
        "intercept", "other", "--port", f"{LOCAL_PORT}:http", "-n", namespace, "--share-local-port"
    )
    assert shared.returncode == 0, shared.stderr + workstation.log("userd")
    assert workstation.kp("leave", "other").returncode == 0

    local_server.terminate()
    local_server.wait(10)
    refused = get_from_pod(cluster, namespace, client, f"http://echo.{namespace}/nobody")
    assert "error" in refused, refused
    assert float(str(refused["seconds"])) < 10

    left = workstation.kp("leave", "echo")
    assert left.returncode == 0, left.stderr
    after = get_from_pod(cluster, namespace, client, f"http://echo.{namespace}/after")
    assert after["status"] == 200
    assert json.loads(str(after["body"]))["path"] == "/after"
    print(f"intercept took {intercept_seconds:.1f} s (agent injected on demand)")


def test_command_gets_the_app_environment_and_its_exit_code(
    cluster: Cluster, namespace: str, workstation: Workstation, manager_namespace: str
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0
    result = workstation.kp(
        "intercept",
        "echo",
        "--port",
        f"{LOCAL_PORT}:http",
        "-n",
        namespace,
        "--",
        "sh",
        "-c",
        'echo "pod=$POD_NAME ns=$POD_NAMESPACE"; exit 7',
        timeout=240,
    )
    assert result.returncode == 7, result.stderr + workstation.log("userd")
    assert "pod=echo-" in result.stdout
    assert f"ns={namespace}" in result.stdout
    assert echo_intercepts(workstation, namespace) == []


def test_bad_intercepts_say_why_and_leave_nothing(
    cluster: Cluster, namespace: str, workstation: Workstation, manager_namespace: str
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0
    cases = {
        ("nope", namespace, "8090:http"): "no Deployment, StatefulSet or ReplicaSet named 'nope'",
        ("echo", "no-such-namespace", "8090:http"): "in namespace 'no-such-namespace'",
        ("echo", namespace, "8090:grpc"): "service echo has no port 'grpc' (ports: http/80)",
    }
    for (workload, ns, port), reason in cases.items():
        result = workstation.kp("intercept", workload, "--port", port, "-n", ns, timeout=240)
        assert result.returncode != 0, result.stdout
        assert reason in result.stderr, result.stderr + workstation.log("userd")
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert echo_intercepts(workstation, namespace) == []


def test_uninstall_removes_the_agent(
    cluster: Cluster, namespace: str, workstation: Workstation, manager_namespace: str
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0
    result = workstation.kp(
        "intercept",
        "echo",
        "--port",
        f"{LOCAL_PORT}:http",
        "-n",
        namespace,
        "--",
        "true",
        timeout=240,
    )
    assert result.returncode == 0, result.stderr

    def containers() -> list[list[str]]:
        pods = cluster.get("pods", "-n", namespace, "-l", "app=echo")["items"]
        return [
            [c["name"] for c in p["spec"]["containers"]]
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
        ]

    assert any(len(c) == 2 for c in containers()), containers()
    removed = workstation.kp("uninstall", "echo", "-n", namespace)
    assert removed.returncode == 0, removed.stderr
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and containers() != [["echo"]]:
        time.sleep(2)
    assert containers() == [["echo"]]
    template = cluster.get("deployment", "echo", "-n", namespace)["spec"]["template"]
    left = (template["metadata"].get("annotations") or {}).keys()
    assert not [a for a in left if a.startswith("kubepresence.io/")], left
    again = workstation.kp("uninstall", "echo", "-n", namespace)
    assert again.returncode == 2
    assert "has no traffic agent" in again.stderr


def pod_ready(cluster: Cluster, namespace: str, pod: str) -> bool:
    return kube.is_ready(cluster.get("pod", pod, "-n", namespace))


def test_probes_keep_asking_the_app(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    tmp_path: Path,
) -> None:
    cluster.deploy_echo("http", namespace)  # numeric targetPort: the port is redirected
    client = cluster.client_pod(namespace)
    served = tmp_path / "served"
    served.mkdir()
    (served / "hello.txt").write_text("from the workstation")
    # A plain file server (404 for the app's /ready) that says so for every connection.
    server = cluster.start_on_workstation(
        [sys.executable, str(COUNTING_SERVER), str(LOCAL_PORT), str(served)]
    )
    try:
        ready = first_line(server)  # not a probe: every connection counts
        assert ready == "listening", f"the file server on {LOCAL_PORT} did not start: {ready}"
        connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
        assert connected.returncode == 0, connected.stderr
        result = workstation.kp("intercept", "echo", "--port", f"{LOCAL_PORT}", "-n", namespace)
        assert result.returncode == 0, result.stderr + workstation.log("userd")
        [pod] = cluster.wait_pods_ready(namespace, "app=echo", 1)
        name = pod["metadata"]["name"]
        # Part of the scenario: the probe runs every second and three failures would make
        # the pod unready, so the test lets several probes happen before it looks.
        time.sleep(5)
        assert pod_ready(cluster, namespace, name)
        answer = get_from_pod(cluster, namespace, client, f"http://echo.{namespace}/hello.txt")
        assert answer["body"] == "from the workstation", answer
        assert pod_ready(cluster, namespace, name)
        assert workstation.kp("leave", "echo").returncode == 0
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=10)
    # Only the client pod's request came: probes (every 1-2 s) stayed in the cluster.
    assert output.splitlines().count("connection") == 1, output
