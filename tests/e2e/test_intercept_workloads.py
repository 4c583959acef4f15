"""Intercepts of every workload kind, under load, and with the app's configuration.

Scenarios (one `kubepresence connect` for the module, its own traffic manager, ws1 held
through workstation_cli's ws1 lock; each test its own namespace; a client pod in the
cluster calls the workload's Service; an HTTP server on the workstation answers
intercepted requests):
- a StatefulSet (named targetPort): `intercept` → the workstation answers; `leave` → the
  pod answers again;
- a bare ReplicaSet: its pods are replaced to get the agent (a ReplicaSet does not roll),
  intercepted; `uninstall` replaces them again, without the agent. (Its one pod, like a
  one-pod StatefulSet's, is replaced without a surge: callers are refused for the moment
  kube-proxy takes to route to the new pod, which `intercept` cannot observe; the tests
  measure that window and bound it to 10 s);
- a Deployment with 2 replicas: both pods carry the agent and every request, each on a
  new connection, reaches the workstation;
- a numeric targetPort, named by its *Service* port number (`--port L:80`): the pod
  template asks for the redirect of container port 8080, the init container redirects it;
- `--port L:SVCPORT` through a Service whose port name differs from the container's;
  several Services select the workload: one line asks for `--service`, which then picks;
  no Service: the container port is intercepted, and a message says so;
- load: a 100 MiB upload from a cluster pod arrives checksum-equal on the workstation;
  100 concurrent requests all succeed (errors counted, bounded time);
- environment: the env file holds the app container's variables, including ones from a
  ConfigMap (`envFrom`, `configMapKeyRef`) and a Secret (`secretKeyRef`);
- agents that never arrive: `status` shows what the intercept waits for, and after the
  wait the command fails (exit 4) saying why — pods the webhook left without the agent,
  or a container whose image the node cannot load (ErrImageNeverPull).
Printed: time from `intercept` to the first intercepted answer (with injection and with
the agent already there), median latency of 50 sequential requests intercepted vs the
app's own, the upload's time.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kpcluster import manifests
from kpcluster.harness import Cluster
from workstation_cli import BIN, Session, Workstation
from workstation_servers import PROGRAMS, await_listening

LOCAL_PORT = 8195
LOCAL_SERVER = PROGRAMS / "digest_server.py"
# In the client pod (programs/*.py, run with `python3 -c`): n sequential GETs; a GET until
# the first answer; n concurrent GETs; an upload.
GETS = (PROGRAMS / "sequential_gets.py").read_text()
FIRST_ANSWER = (PROGRAMS / "first_answer.py").read_text()
CONCURRENT = (PROGRAMS / "concurrent_gets.py").read_text()
UPLOAD = (PROGRAMS / "upload.py").read_text()


@pytest.fixture(scope="module")
def local_server(cluster: Cluster, session: Session) -> Iterator[subprocess.Popen[str]]:
    process = cluster.start_on_workstation([sys.executable, str(LOCAL_SERVER), str(LOCAL_PORT)])
    await_listening(cluster, process, LOCAL_PORT, "the workstation server")
    yield process
    process.terminate()
    process.wait(10)


@pytest.fixture(autouse=True)
def no_intercept_left(session: Session) -> Iterator[None]:
    """A test that fails half-way leaves its intercept; the next one must not inherit it."""
    yield
    if intercept_lines(session.ws):
        session.ws.kp("leave", "echo")


def gets(cluster: Cluster, namespace: str, url: str, n: int = 1) -> list[dict[str, Any]]:
    result = cluster.exec_in_pod(namespace, "client", ["python3", "-c", GETS, url, str(n)])
    return list(json.loads(result.stdout))


def first_answer(cluster: Cluster, namespace: str, url: str) -> dict[str, Any]:
    result = cluster.exec_in_pod(namespace, "client", ["python3", "-c", FIRST_ANSWER, url])
    answer = dict(json.loads(result.stdout))
    assert str(answer["body"]).startswith("workstation:"), answer
    assert answer["seconds"] < 10, answer  # kube-proxy catches up within seconds
    return answer


def from_workstation(answers: list[dict[str, Any]]) -> int:
    return sum(str(a.get("body", "")).startswith("workstation:") for a in answers)


def from_app(answers: list[dict[str, Any]]) -> int:
    return sum('"pod": "echo' in str(a.get("body", "")) for a in answers)


def intercept(ws: Workstation, namespace: str, *args: str) -> tuple[str, float]:
    started = time.monotonic()
    result = ws.kp("intercept", "echo", "-n", namespace, *args, timeout=240)
    assert result.returncode == 0, result.stderr + ws.logs()
    return result.stdout + result.stderr, time.monotonic() - started


def leave(ws: Workstation, name: str = "echo") -> None:
    left = ws.kp("leave", name)
    assert left.returncode == 0, left.stderr


def intercept_lines(ws: Workstation) -> list[str]:
    """The intercepts `status` shows, one line each, with what a waiting one waits for."""
    connection = ws.status()["connection"]
    assert isinstance(connection, dict)
    return [str(line) for line in connection.get("intercepts", [])]


def containers(cluster: Cluster, namespace: str) -> list[list[str]]:
    pods = cluster.get("pods", "-n", namespace, "-l", "app=echo")["items"]
    return sorted(
        [c["name"] for c in p["spec"]["containers"]]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
    )


def test_statefulset(
    cluster: Cluster, namespace: str, session: Session, local_server: subprocess.Popen[str]
) -> None:
    cluster.deploy_echo_workload("StatefulSet", namespace, named_target_port=True)
    cluster.client_pod(namespace)
    url = f"http://echo.{namespace}"
    assert from_app(gets(cluster, namespace, url)) == 1

    out, seconds = intercept(session.ws, namespace, "--port", f"{LOCAL_PORT}:http")
    assert f"Intercepting {namespace}/echo service echo port http" in out
    first = first_answer(cluster, namespace, url)
    assert containers(cluster, namespace) == [["echo", "kubepresence-agent"]]
    leave(session.ws)
    assert from_app(gets(cluster, namespace, url, 3)) == 3

    # Again, with the agent already there: no rollout.
    _, again = intercept(session.ws, namespace, "--port", f"{LOCAL_PORT}:80")
    assert from_workstation(gets(cluster, namespace, url)) == 1
    leave(session.ws)
    print(
        f"\nstatefulset: intercept → first answer {seconds + first['seconds']:.1f} s with "
        f"injection ({first['refused']} refused in the {first['seconds']:.2f} s before the "
        f"Service routed to the new pod), {again:.1f} s (+ request) with the agent already there"
    )


def test_bare_replicaset_pods_are_replaced(
    cluster: Cluster, namespace: str, session: Session, local_server: subprocess.Popen[str]
) -> None:
    cluster.deploy_echo_workload("ReplicaSet", namespace, named_target_port=True)
    cluster.client_pod(namespace)
    url = f"http://echo.{namespace}"
    before = {
        p["metadata"]["name"]
        for p in cluster.get("pods", "-n", namespace, "-l", "app=echo")["items"]
    }

    _, seconds = intercept(session.ws, namespace, "--port", f"{LOCAL_PORT}:http")
    assert containers(cluster, namespace) == [["echo", "kubepresence-agent"]]
    after = {
        p["metadata"]["name"]
        for p in cluster.get("pods", "-n", namespace, "-l", "app=echo")["items"]
    }
    assert not before & after, (before, after)
    first = first_answer(cluster, namespace, url)
    assert from_workstation(gets(cluster, namespace, url, 3)) == 3
    leave(session.ws)
    assert from_app(gets(cluster, namespace, url, 3)) == 3

    removed = session.ws.kp("uninstall", "echo", "-n", namespace)
    assert removed.returncode == 0, removed.stderr
    cluster.wait_pods_ready(namespace, "app=echo", 1)
    assert containers(cluster, namespace) == [["echo"]]
    print(
        f"\nreplicaset: intercept took {seconds:.1f} s (pods replaced); first answer after "
        f"{first['seconds']:.2f} s more ({first['refused']} refused meanwhile)"
    )


def test_two_replicas_both_pods_come_to_the_workstation(
    cluster: Cluster, namespace: str, session: Session, local_server: subprocess.Popen[str]
) -> None:
    cluster.deploy_echo_workload("Deployment", namespace, replicas=2, named_target_port=True)
    cluster.client_pod(namespace)
    url = f"http://echo.{namespace}"
    direct = gets(cluster, namespace, url, 30)
    assert from_app(direct) == 30
    assert len({json.loads(a["body"])["pod"] for a in direct}) == 2  # kube-proxy spreads

    intercept(session.ws, namespace, "--port", f"{LOCAL_PORT}:http")
    assert containers(cluster, namespace) == [["echo", "kubepresence-agent"]] * 2
    answers = gets(cluster, namespace, url, 30)
    assert from_workstation(answers) == 30, [a for a in answers if "workstation" not in str(a)]
    leave(session.ws)
    assert from_app(gets(cluster, namespace, url, 10)) == 10


def test_numeric_target_port_is_redirected(
    cluster: Cluster, namespace: str, session: Session, local_server: subprocess.Popen[str]
) -> None:
    cluster.deploy_echo_workload("Deployment", namespace, named_target_port=False)
    cluster.client_pod(namespace)
    url = f"http://echo.{namespace}"
    direct = gets(cluster, namespace, url, 50)
    assert from_app(direct) == 50

    out, seconds = intercept(session.ws, namespace, "--port", f"{LOCAL_PORT}:80")
    assert "service echo port 8080" in out
    template = cluster.get("deployment", "echo", "-n", namespace)["spec"]["template"]
    assert template["metadata"]["annotations"]["kubepresence.io/inject-numeric-ports"] == "8080"
    pod = cluster.get("pods", "-n", namespace, "-l", "app=echo")["items"][0]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["kubepresence-init"]
    intercepted = gets(cluster, namespace, url, 50)
    assert from_workstation(intercepted) == 50
    leave(session.ws)
    assert from_app(gets(cluster, namespace, url, 3)) == 3

    def median_ms(answers: list[dict[str, Any]]) -> float:
        return statistics.median(float(a["seconds"]) for a in answers) * 1000

    print(
        f"\nnumeric targetPort: intercept took {seconds:.1f} s with injection; median of 50 "
        f"requests (new connection each) intercepted {median_ms(intercepted):.1f} ms vs the "
        f"app {median_ms(direct):.1f} ms (+{median_ms(intercepted) - median_ms(direct):.1f} ms)"
    )


def test_service_choice_and_no_service(
    cluster: Cluster, namespace: str, session: Session, local_server: subprocess.Popen[str]
) -> None:
    cluster.deploy_echo_workload("Deployment", namespace, named_target_port=True)
    cluster.client_pod(namespace)
    second = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo-web", "namespace": namespace},
        "spec": {
            "selector": {"app": "echo"},
            "ports": [{"name": "web", "port": 8000, "targetPort": "http"}],
        },
    }
    cluster.apply([second])
    ambiguous = session.ws.kp("intercept", "echo", "-n", namespace, "--port", f"{LOCAL_PORT}:web")
    assert ambiguous.returncode == 2, ambiguous.stderr
    assert ambiguous.stderr.strip().splitlines() == [
        "kubepresence: several services select the pods of deployment/echo: echo, echo-web; "
        "choose one with --service"
    ]
    out, _ = intercept(
        session.ws, namespace, "--service", "echo-web", "--port", f"{LOCAL_PORT}:web"
    )
    assert "service echo-web port http" in out
    assert from_workstation(gets(cluster, namespace, f"http://echo-web.{namespace}:8000", 3)) == 3
    assert from_workstation(gets(cluster, namespace, f"http://echo.{namespace}", 3)) == 3
    leave(session.ws)

    cluster.kubectl("delete", "service", "echo", "echo-web", "-n", namespace)
    out, _ = intercept(session.ws, namespace, "--port", f"{LOCAL_PORT}:http")
    assert "no service selects the pods of deployment/echo: intercepting the container port" in out
    pod_ip = cluster.get("pods", "-n", namespace, "-l", "app=echo")["items"]
    live = [p for p in pod_ip if not p["metadata"].get("deletionTimestamp")]
    assert (
        from_workstation(gets(cluster, namespace, f"http://{live[0]['status']['podIP']}:8080", 3))
        == 3
    )
    leave(session.ws)


def test_load_upload_and_concurrency(
    cluster: Cluster, namespace: str, session: Session, local_server: subprocess.Popen[str]
) -> None:
    cluster.deploy_echo_workload("Deployment", namespace, named_target_port=True)
    cluster.client_pod(namespace)
    intercept(session.ws, namespace, "--port", f"{LOCAL_PORT}:http")
    sent = cluster.exec_in_pod(
        namespace,
        "client",
        ["python3", "-c", UPLOAD, f"echo.{namespace}", "80", "100"],
        timeout=300,
    )
    upload = json.loads(sent.stdout)
    assert upload["received"] == {"sha256": upload["sent"], "size": 100 << 20}, upload
    concurrent = cluster.exec_in_pod(
        namespace,
        "client",
        ["python3", "-c", CONCURRENT, f"http://echo.{namespace}", "100"],
        timeout=180,
    )
    result = json.loads(concurrent.stdout)
    assert result["error_count"] == 0, result
    assert result["seconds"] < 60, result
    leave(session.ws)
    print(
        f"\nload: 100 MiB upload in {upload['seconds']:.1f} s "
        f"({100 / upload['seconds']:.1f} MiB/s); 100 concurrent requests in "
        f"{result['seconds']:.1f} s, {result['error_count']} errors"
    )


def test_env_file_has_configmap_and_secret_values(
    cluster: Cluster,
    namespace: str,
    session: Session,
    local_server: subprocess.Popen[str],
    tmp_path: Path,
) -> None:
    config = cluster.deploy_echo_workload(
        "Deployment",
        namespace,
        named_target_port=True,
        extra=manifests.config_objects(
            "settings",
            namespace,
            {"GREETING": "hello world", "COLOR": "blue", "MULTI": "line one\nline two"},
            {"PASSWORD": 's3cr=t "quoted"'},
        ),
        env=[
            {
                "name": "FAVOURITE",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "COLOR"}},
            },
            {
                "name": "DB_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "settings", "key": "PASSWORD"}},
            },
        ],
        env_from=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
    )
    assert config.pod_name
    env_json = session.ws.home / "echo.env.json"
    intercept(session.ws, namespace, "--port", f"{LOCAL_PORT}:http", "--env-json", str(env_json))
    environment = json.loads(env_json.read_text())
    leave(session.ws)
    assert environment["FAVOURITE"] == "blue"
    assert environment["DB_PASSWORD"] == 's3cr=t "quoted"'
    assert environment["CFG_GREETING"] == "hello world"
    assert environment["CFG_MULTI"] == "line one\nline two"
    assert environment["POD_NAME"].startswith("echo-")
    assert not any(k.startswith("KP_AGENT_") for k in environment), sorted(environment)


def test_agents_that_never_arrive_say_why(
    cluster: Cluster, session: Session, local_server: subprocess.Popen[str]
) -> None:
    # The webhook leaves the manager's own namespace alone: pods there roll without the
    # agent, as if the webhook had not been called.
    namespace = session.manager_namespace
    cluster.deploy_echo_workload("Deployment", namespace, named_target_port=True)
    output, _ = intercept_until_it_gives_up(cluster, session, namespace)
    # Refused after the webhook's retries, not at the end of the 120 s wait.
    assert "webhook did not inject the agent (4 tries): the new pods of " in output, output
    assert "have no agent container" in output, output
    assert "webhook was not called" in output, output
    assert "the pod template was put back" in output, output
    assert intercept_lines(session.ws) == []


def test_an_image_the_node_cannot_load_is_named(
    cluster: Cluster, namespace: str, session: Session, local_server: subprocess.Popen[str]
) -> None:
    objects = manifests.echo_workload("Deployment", "echo", namespace, "localhost/kp-none:0")
    cluster.apply(objects)  # never Ready: imagePullPolicy Never, and no such image
    output, steps = intercept_until_it_gives_up(cluster, session, namespace)
    assert "the agents did not arrive in 120 s: pod echo-" in output, output
    assert "container echo cannot get its image localhost/kp-none:0 (ErrImageNeverPull" in (
        output.replace("\n", "")
    ), output
    assert any("injecting the agent" in s for s in steps), steps


def intercept_until_it_gives_up(
    cluster: Cluster, session: Session, namespace: str
) -> tuple[str, set[str]]:
    """Run an intercept that cannot succeed; its output (exit code 4), and the steps
    `status` showed meanwhile."""
    argv = [
        "env",
        *(f"{k}={v}" for k, v in session.ws.env.items()),
        str(BIN / "kubepresence"),
        *("intercept", "echo", "-n", namespace, "--port", f"{LOCAL_PORT}:http"),
    ]
    started = time.monotonic()
    waiting = cluster.start_on_workstation(argv)
    steps: set[str] = set()  # what `status` says the intercept waits for
    try:
        while waiting.poll() is None and time.monotonic() - started < 200:
            steps.update(str(line) for line in intercept_lines(session.ws))
            time.sleep(1)
        output = waiting.stdout.read() if waiting.stdout else ""
    finally:
        if waiting.poll() is None:
            waiting.terminate()
        waiting.wait(10)
    assert waiting.returncode == 4, output
    return output, steps
