"""Personal intercepts on the real cluster: HTTP requests routed one by one by their head.

One workstation session holds several personal intercepts of the same workload port,
each with its own filter and its own local server (only one kubepresence session can
live in the workstation namespace at a time, so "two developers" are two intercepts with
different headers here). A pod in the cluster then shows:
- requests with alice's header reach alice's server, bob's reach bob's, the rest the app,
  and one keep-alive connection alternating headers is routed per request;
- path and method filters; chunked request and response bodies; a 50 MiB body arrives
  checksum-equal; an upgraded connection (101) is piped raw to the side that accepted it;
- after `leave`, the intercept's requests reach the app again;
- a global intercept next to personal ones is refused, and bad filters get one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from kpcluster.harness import Cluster
from workstation_cli import Workstation
from workstation_servers import PROGRAMS, await_listening

PORTS = {"alice": 8191, "bob": 8192, "carol": 8193}
MIB = 1024 * 1024

# A workstation server that says who it is, reads chunked or sized bodies, answers
# /chunked with a chunked body, and turns an Upgrade request into a raw echo.
LOCAL_SERVER = PROGRAMS / "personal_server.py"

# The cluster-side client: one keep-alive connection, a list of requests, each answer's
# JSON (with who answered: a workstation server's name, else the app pod's name).
CLIENT = (PROGRAMS / "personal_client.py").read_text()

UPGRADE = (PROGRAMS / "upgrade_client.py").read_text()


@pytest.fixture
def local_servers(cluster: Cluster) -> Iterator[dict[str, subprocess.Popen[str]]]:
    servers = {
        name: cluster.start_on_workstation([sys.executable, str(LOCAL_SERVER), name, str(port)])
        for name, port in PORTS.items()
    }
    try:
        for name, process in servers.items():
            await_listening(cluster, process, PORTS[name], f"the workstation server {name}")
        yield servers
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(10)


def intercept(
    workstation: Workstation, namespace: str, name: str, *filters: str
) -> subprocess.CompletedProcess[str]:
    return workstation.kp(
        "intercept", "echo", "--name", name, "--port", f"{PORTS[name]}:http", "-n", namespace,
        *filters, timeout=240,
    )  # fmt: skip


def requests_from_pod(
    cluster: Cluster, namespace: str, pod: str, plan: list[dict[str, object]]
) -> list[dict[str, object]]:
    result = cluster.exec_in_pod(
        namespace, pod, ["python3", "-c", CLIENT, f"echo.{namespace}", json.dumps(plan)],
        timeout=180,
    )  # fmt: skip
    return list(json.loads(result.stdout))


def test_personal_intercepts_route_each_request(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_servers: dict[str, subprocess.Popen[str]],
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    client = cluster.client_pod(namespace)
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.log("userd")

    started = time.monotonic()
    alice = intercept(workstation, namespace, "alice", "--http-header", "x-dev=alice")
    assert alice.returncode == 0, alice.stderr + workstation.log("userd")
    first_seconds = time.monotonic() - started
    assert "requests with x-dev: alice" in alice.stdout
    bob = intercept(workstation, namespace, "bob", "--http-header", "X-Dev=bob")
    assert bob.returncode == 0, bob.stderr
    carol = intercept(
        workstation, namespace, "carol",
        "--http-path-prefix", "/carol/", "--http-method", "post",
    )  # fmt: skip
    assert carol.returncode == 0, carol.stderr

    listed = json.loads(workstation.kp("list", "-n", namespace, "-o", "json").stdout)
    [echo] = [w for w in listed["workloads"] if w["name"] == "echo"]
    filters = {i["name"]: (i["http_filter"], i["state"]) for i in echo["intercepts"]}
    assert filters == {
        "alice": ("x-dev: alice", "active"),
        "bob": ("x-dev: bob", "active"),
        "carol": ("path prefix /carol/, method POST", "active"),
    }

    alice_h, bob_h = {"x-dev": "alice"}, {"X-DEV": "bob"}
    plan: list[dict[str, object]] = [
        {"path": "/1", "headers": alice_h},
        {"path": "/2", "headers": bob_h},
        {"path": "/3"},
        {"path": "/4", "headers": alice_h},
        {"path": "/5", "headers": {"x-dev": "mallory"}},
        {"path": "/carol/6", "method": "POST"},
        {"path": "/carol/7"},  # GET: carol's filter wants POST
        {"path": "/chunked/8", "headers": bob_h, "method": "POST", "chunks": ["a" * 1000, "b"]},
        {"path": "/9", "headers": alice_h, "method": "PUT", "body_mib": 50},
        {"path": "/10", "method": "PUT", "body_mib": 5},
    ]
    results = requests_from_pod(cluster, namespace, client, plan)
    who = [str(r["who"]) for r in results]
    assert who[:2] == ["alice", "bob"]
    assert who[2].startswith("echo-")  # the app pod
    assert who[3] == "alice"
    assert who[4].startswith("echo-")
    assert who[5] == "carol"
    assert who[6].startswith("echo-")
    assert who[7:9] == ["bob", "alice"]
    assert who[9].startswith("echo-")
    assert all(r["status"] == 200 for r in results), results
    assert [r["path"] for r in results] == [step["path"] for step in plan]
    assert (results[7]["chunked"], results[7]["body_ok"], results[7]["body_length"]) == (
        True,
        True,
        1001,
    )
    assert (results[8]["body_ok"], results[8]["body_length"]) == (True, 50 * MIB)
    assert results[9]["body_length"] == 5 * MIB

    upgraded = cluster.exec_in_pod(
        namespace, client, ["python3", "-c", UPGRADE, f"echo.{namespace}", "x-dev: alice"]
    )
    assert json.loads(upgraded.stdout) == {"status": "101", "echoed": "alice:ping"}

    # A global intercept cannot join personal ones.
    clash = workstation.kp(
        "intercept", "echo", "--name", "all", "--port", "8194:http", "-n", namespace
    )
    assert clash.returncode == 2, clash.stderr
    assert "a global intercept cannot share a port" in clash.stderr
    same = intercept(workstation, namespace, "bob", "--http-header", "x-dev=alice")
    assert same.returncode == 2, same.stderr

    left = workstation.kp("leave", "alice")
    assert left.returncode == 0, left.stderr
    after = requests_from_pod(
        cluster,
        namespace,
        client,
        [{"path": "/a", "headers": alice_h}, {"path": "/b", "headers": bob_h}],
    )
    assert str(after[0]["who"]).startswith("echo-")
    assert after[1]["who"] == "bob"
    print(f"first personal intercept active after {first_seconds:.1f} s (agent injected on demand)")


def test_bad_filters_say_why(
    cluster: Cluster, namespace: str, workstation: Workstation, manager_namespace: str
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0
    cases = {
        ("--http-header", "x-dev"): "expected NAME=VALUE",
        ("--http-header", "bad name=1"): "is not a valid header name",
        ("--http-path-regex", "(["): "--http-path-regex '(['",
        ("--http-path-prefix", "api"): "a path starts with '/'",
    }
    for options, reason in cases.items():
        result = workstation.kp(
            "intercept", "echo", "--port", "8191:http", "-n", namespace, *options
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert reason in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    listed = json.loads(workstation.kp("list", "-n", namespace, "-o", "json").stdout)
    assert all(w["intercepts"] == [] for w in listed["workloads"])


# The frontend of the preview test: calls the echo backend and passes the preview's
# header on (propagating it is the app's job, like any tracing header).
FRONTEND = (PROGRAMS / "frontend.py").read_text()

FETCH = (PROGRAMS / "fetch_json.py").read_text()


def frontend(namespace: str, image: str) -> list[dict[str, object]]:
    labels = {"app": "frontend"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "frontend", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "frontend",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": ["python3", "-c", FRONTEND],
                                "env": [{"name": "BACKEND", "value": f"http://echo.{namespace}"}],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "frontend", "namespace": namespace},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    ]


def test_preview_url_shows_the_workstation_through_the_frontend(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    local_servers: dict[str, subprocess.Popen[str]],
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    cluster.apply(frontend(namespace, cluster.testapps_image))
    cluster.kubectl("rollout", "status", "deployment/frontend", "-n", namespace, "--timeout=120s",
                    timeout=130)  # fmt: skip
    client = cluster.client_pod(namespace)
    assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0

    result = intercept(
        workstation, namespace, "alice",
        "--preview-url", "--ingress-host", f"frontend.{namespace}", "-o", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + workstation.log("userd")
    created = json.loads(result.stdout)
    url = created["preview_url"]
    assert url.startswith(f"http://kubepresence-manager.{manager_namespace}:8082/"), (
        result.stdout
        + cluster.kubectl("logs", "-n", manager_namespace, "deployment/kubepresence-manager")
    )
    assert created["http_filter"].startswith("x-kubepresence-intercept-id: ")

    def fetch(address: str) -> dict[str, object]:
        out = cluster.exec_in_pod(namespace, client, ["python3", "-c", FETCH, address]).stdout
        return dict(json.loads(out))

    previewed = fetch(url + "hello?x=1")
    assert previewed["status"] == 200
    body = previewed["body"]
    assert isinstance(body, dict)
    assert body["frontend"] is True
    assert body["backend"]["who"] == "alice", body  # the workstation answered
    assert body["backend"]["path"] == "/hello?x=1"

    plain = fetch(f"http://frontend.{namespace}/hello")["body"]
    assert isinstance(plain, dict)
    assert str(plain["backend"]["pod"]).startswith("echo-")  # the app answered

    listed = json.loads(workstation.kp("list", "-n", namespace, "-o", "json").stdout)
    [echo] = [w for w in listed["workloads"] if w["name"] == "echo"]
    assert [i["preview_url"] for i in echo["intercepts"]] == [url]

    assert workstation.kp("leave", "alice").returncode == 0
    gone = cluster.exec_in_pod(
        namespace, client, ["python3", "-c", FETCH, url + "hello"], check=False
    )
    assert "404" in gone.stdout + gone.stderr


RAW_ECHO = (PROGRAMS / "raw_echo_client.py").read_text()


def test_a_filter_on_a_port_that_is_not_http(
    cluster: Cluster, namespace: str, workstation: Workstation, manager_namespace: str
) -> None:
    cluster.deploy_echo("tcp", namespace, named_target_port=True)
    client = cluster.client_pod(namespace)
    assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0
    result = workstation.kp(
        "intercept", "tcp-echo", "--port", "8191:tcp", "-n", namespace, "--http-header", "x-dev=a",
        "--mount=false", timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + workstation.log("userd")
    echoed = cluster.exec_in_pod(
        namespace, client, ["python3", "-c", RAW_ECHO, f"tcp-echo.{namespace}"]
    )
    assert json.loads(echoed.stdout) == {"echoed": "\x00\x01 not http\n"}  # the app answered
    deadline = time.monotonic() + 20
    while True:
        listed = workstation.kp("list", "-n", namespace)
        if "not HTTP" in listed.stdout or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "the port carries traffic that is not HTTP" in listed.stdout, listed.stdout


# An h2c server (prior knowledge) on the workstation, with the h2 library.
H2C_SERVER = PROGRAMS / "h2c_server.py"

# An h2c client with the standard library only (the pod has no h2): the preface, empty
# SETTINGS, one HEADERS frame in literal HPACK, then DATA of stream 1 until its end.
H2C_CLIENT = (PROGRAMS / "h2c_client.py").read_text()


def test_h2c_requests_are_routed_per_request(
    cluster: Cluster, namespace: str, workstation: Workstation, manager_namespace: str
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    client = cluster.client_pod(namespace)
    server = cluster.start_on_workstation([sys.executable, str(H2C_SERVER), str(PORTS["alice"])])
    try:
        await_listening(cluster, server, PORTS["alice"], "the h2c server")
        assert workstation.kp("connect", "--manager-namespace", manager_namespace).returncode == 0
        result = intercept(
            workstation, namespace, "alice", "--http-header", "x-dev=alice", "--mount=false"
        )
        assert result.returncode == 0, result.stderr + workstation.log("userd")
        answer = cluster.exec_in_pod(
            namespace, client, ["python3", "-c", H2C_CLIENT, f"echo.{namespace}", "alice"]
        )
        assert json.loads(answer.stdout) == {"body": "workstation h2c /h2 alice", "done": True}
    finally:
        server.terminate()
        server.wait(10)
