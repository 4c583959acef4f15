"""Agent injection and the traffic agent on the real cluster.

Each test installs its own traffic manager with the webhook enabled (userd's
`ensure_manager`, `webhook_enabled=True`, a short session TTL) into a fresh namespace and
uninstalls it afterwards. A watcher on the workstation follows the manager's WatchAgents
through userd's port-forward, as a client would.

Scenarios:
- Deployments annotated `kubepresence.io/inject-traffic-agent: enabled` get the agent:
  `kubectl get pod -o yaml` shows the agent container, the app's named port renamed
  (`kp-…`) and taken by the agent, and (numeric target port) the init container that
  redirects the port; `kubectl describe pod` names the agent container;
- the agents arrive at the manager (seen through WatchAgents from the workstation) with
  their pod, workload, container, ports and the app's environment; the time from the
  rollout's start to each agent's arrival is measured;
- the apps still serve through their Services exactly as before, for a Service whose
  targetPort names the port and for one whose targetPort is a number: the HTTP echo's
  answer equals an uninjected twin's (pod name and Host aside), the TCP echo is
  byte-exact, and 100 MiB through each TCP echo come back checksum-equal; the numeric path
  really passes the agent (the pod's REDIRECT rule counts the connections) and so does the
  named one (the EndpointSlice points at the agent's port);
- an unannotated Deployment is untouched;
- RSS of the manager and of one agent, idle and during the 100 MiB transfers, and the
  transfer times beside an uninjected echo's;
- an agent that falls silent (SIGSTOP) disappears from WatchAgents within the TTL and
  arrives again when it wakes up; a deleted pod's agent disappears within seconds, even
  when it cannot depart itself (stopped): the manager watches agent pods and drops the
  agent when the pod's deletionTimestamp appears; the replacement pod's agent arrives;
- a client's intercept of a Deployment that is then deleted goes to ERROR with the
  reason "workload deleted" (the manager watches workloads);
- with the manager scaled to 0: an injected app keeps serving through its Service, a new
  annotated Deployment still rolls out (fail-open, without agent), and when the manager
  comes back the running agent arrives again by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kpcluster import imagebuild, kube, layout, manifests
from kpcluster.commands import run, wait_for
from kpcluster.harness import Cluster
from kubernetes_asyncio import client
from workstation_cli import agent_pid, manager_pid
from workstation_servers import PROGRAMS

from kubepresence.userd.core.manifests import ManagerInstall
from kubepresence.userd.k8s.apiclient import load_configuration
from kubepresence.userd.k8s.installing import ensure_manager, uninstall_manager

log = logging.getLogger(__name__)

MANAGER = "kubepresence-manager"
MANAGER_SELECTOR = "app.kubernetes.io/name=kubepresence-manager"
INJECT = {"kubepresence.io/inject-traffic-agent": "enabled"}
SESSION_TTL = 12
MIB = 1024 * 1024
BIG = 100 * MIB


# --- the manager: install, webhook effective, uninstall -------------------------------------


def _install(ns: str) -> str:
    async def main() -> str:
        conf = await load_configuration(layout.ADMIN_KUBECONFIG)
        async with client.ApiClient(conf) as api:
            install = ManagerInstall(namespace=ns, webhook_enabled=True, session_ttl=SESSION_TTL)
            return await ensure_manager(api, install, log.info, wait_seconds=150)

    return asyncio.run(main())


def _uninstall(ns: str) -> None:
    async def main() -> None:
        conf = await load_configuration(layout.ADMIN_KUBECONFIG)
        async with client.ApiClient(conf) as api:
            await uninstall_manager(api, ns, log.info, wait_seconds=120)

    asyncio.run(main())


def probe_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "webhook-probe", "namespace": namespace, "annotations": INJECT},
        "spec": {
            "containers": [
                {"name": "app", "image": "x", "ports": [{"name": "http", "containerPort": 80}]}
            ]
        },
    }


def wait_webhook_effective(cluster: Cluster, namespace: str) -> None:
    """Until a server-side dry run of an annotated pod comes back with the agent.

    The manager writes its CA at start-up; the API server picks the configuration up a
    moment later. A dry run goes through the webhook (sideEffects: None) and creates nothing.
    """

    def injected() -> bool:
        out = cluster.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-",
            input_text=json.dumps(probe_pod(namespace)),
        )  # fmt: skip
        names = [c["name"] for c in json.loads(out)["spec"]["containers"]]
        return "kubepresence-agent" in names

    wait_for("the webhook to inject (server-side dry run)", injected, timeout=60, interval=1)


@pytest.fixture
def manager_ns(cluster: Cluster) -> Iterator[str]:
    ns = f"kp-inj-{secrets.token_hex(3)}"
    try:
        assert _install(ns) == "installed"
        yield ns
    finally:
        try:
            _uninstall(ns)
        finally:
            cluster.kubectl(
                "delete",
                f"mutatingwebhookconfiguration/kubepresence-agent-injector-{ns}",
                f"clusterrole/{MANAGER}-{ns}",
                f"clusterrolebinding/{MANAGER}-{ns}",
                "--ignore-not-found",
            )
            cluster.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false")


# --- the watcher on the workstation ---------------------------------------------------------

WATCHER = PROGRAMS / "agent_watcher.py"


def agent_story(cluster: Cluster, namespace: str, pod: str) -> str:
    """The agent container's restarts and logs (this and the previous run), for failures."""
    status = cluster.get("pod", pod, "-n", namespace).get("status", {})
    restarts = {
        c["name"]: (c.get("restartCount"), c.get("state"))
        for c in status.get("containerStatuses", [])
    }
    story = [f"\ncontainers: {restarts}"]
    for previous in (True, False):
        log = kube.kubectl(
            "logs", "-n", namespace, pod, "-c", "kubepresence-agent", "--tail=60",
            *(["--previous"] if previous else []), check=False,
        )  # fmt: skip
        story.append(f"\n--- agent log{' (previous run)' if previous else ''}:\n{log}")
    return "".join(story)


class Watcher:
    """WatchAgents through userd's port-forward, one JSON line per snapshot; or, given
    `intercept` (NS/WORKLOAD/PORT), a client that creates it and follows WatchIntercepts."""

    def __init__(self, cluster: Cluster, manager_ns: str, intercept: str = "") -> None:
        self.proc = cluster.start_on_workstation(
            [sys.executable, str(WATCHER), manager_ns, str(layout.WORKSTATION_KUBECONFIG)]
            + ([intercept] if intercept else [])
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.output: list[str] = []
        self.latest: dict[str, Any] = {}
        self.first_seen: dict[str, float] = {}  # pod -> when a snapshot first listed it
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("{"):
                parsed = json.loads(line)
                for agent in parsed.get("agents", []):
                    self.first_seen.setdefault(agent["pod"], parsed["t"])
                self.lines.put(parsed)

    def until(
        self,
        what: str,
        condition: Callable[[list[dict[str, Any]]], bool],
        timeout: float,
        explain: Callable[[], str] = lambda: "",
        key: str = "agents",
    ) -> tuple[float, list[dict[str, Any]]]:
        """Wait for a snapshot that satisfies `condition`; (its time, its agents, or its
        intercepts with `key="intercepts"`).

        `explain` adds what the cluster says to a failure (logs, restarts)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"WatchAgents: no {what} within {timeout:.0f} s; last: {self.latest}\n"
                    + "".join(self.output[-20:])
                    + explain()
                )
            try:
                line = self.lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if self.proc.poll() is not None:
                    pytest.fail("the watcher died:\n" + "".join(self.output[-30:]))
                continue
            if key in line:
                self.latest = line
                if condition(line[key]):
                    return line["t"], line[key]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def watcher_of(cluster: Cluster) -> Iterator[Callable[[str], Watcher]]:
    started: list[Watcher] = []

    def start(manager_ns: str) -> Watcher:
        watcher = Watcher(cluster, manager_ns)
        started.append(watcher)
        watcher.until("first snapshot", lambda agents: True, timeout=60)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def pods_of(agents: list[dict[str, Any]]) -> set[str]:
    return {a["pod"] for a in agents}


# --- processes of the pods, seen from the node (this machine) --------------------------------


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}


def redirect_packets(pid: int, port: int) -> int:
    """Packets counted by the pod's nat PREROUTING REDIRECT rule for `port`."""
    out = run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "iptables", "-t", "nat", "-L", "PREROUTING",
         "-n", "-v", "-x"],
    ).stdout  # fmt: skip
    for line in out.splitlines():
        if "REDIRECT" in line and f"dpt:{port}" in line:
            return int(line.split()[0])
    raise AssertionError(f"no REDIRECT rule for port {port}:\n{out}")


class Sampler:
    """Peak RSS of some processes, sampled every 50 ms while it runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for name, pid in self.pids.items():
                try:
                    self.peak[name] = max(self.peak[name], memory(pid)["VmRSS"])
                except OSError:
                    continue

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# --- traffic from a client pod ---------------------------------------------------------------

TRAFFIC = (PROGRAMS / "traffic.py").read_text()


def traffic(cluster: Cluster, ns: str, pod: str, jobs: list[dict[str, Any]]) -> list[Any]:
    """Run the jobs in the client pod, one after another; their results."""
    argv = ["python3", "-c", TRAFFIC, json.dumps(jobs)]
    return list(json.loads(cluster.exec_in_pod(ns, pod, argv, timeout=300).stdout))


def service(cluster: Cluster, ns: str, name: str) -> tuple[str, int]:
    svc = cluster.get("service", name, "-n", ns)
    return svc["spec"]["clusterIP"], int(svc["spec"]["ports"][0]["port"])


def http_job(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    host, port = service(cluster, ns, name)
    return {"kind": "http", "host": host, "port": port, "path": "/e2e/check?q=1"}


def stream_job(cluster: Cluster, ns: str, name: str, size: int, seed: int) -> dict[str, Any]:
    host, port = service(cluster, ns, name)
    return {"kind": "stream", "host": host, "port": port, "size": size, "seed": seed}


def running_pod(cluster: Cluster, ns: str, app: str) -> dict[str, Any]:
    pods = [
        p
        for p in cluster.get("pods", "-n", ns, "-l", f"app={app}")["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return dict(pods[0])


def deploy(
    cluster: Cluster,
    ns: str,
    kind: str,
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    named: bool = False,
) -> None:
    cluster.apply(
        manifests.echo(
            kind,
            name,
            ns,
            cluster.testapps_image,
            pod_annotations=annotations,
            named_target_port=named,
        )
    )


def wait_serving(cluster: Cluster, ns: str, names: list[str], timeout: float = 120) -> None:
    for name in names:
        cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", ns,
                        f"--timeout={int(timeout)}s", timeout=timeout + 10)  # fmt: skip


def report(figures: dict[str, Any]) -> None:
    """Measured figures: printed (pytest -s) and kept next to the other results."""
    line = json.dumps(figures, sort_keys=True)
    print(f"\nMEASURED {line}")
    out = Path(os.environ.get("KP_E2E_FIGURES", "/tmp/kubepresence-injection-figures.jsonl"))
    with out.open("a") as f:
        f.write(line + "\n")


# --- the tests -------------------------------------------------------------------------------


def test_injected_apps_serve_as_before(
    cluster: Cluster, namespace: str, manager_ns: str, watcher_of: Callable[[str], Watcher]
) -> None:
    wait_webhook_effective(cluster, namespace)
    watcher = watcher_of(manager_ns)
    numeric = {**INJECT, "kubepresence.io/inject-numeric-ports": "8080,9000"}
    start = time.time()
    deploy(cluster, namespace, "http", "http-named", annotations=INJECT, named=True)
    deploy(cluster, namespace, "tcp", "tcp-named", annotations=INJECT, named=True)
    deploy(cluster, namespace, "http", "http-numeric", annotations=numeric)
    deploy(cluster, namespace, "tcp", "tcp-numeric", annotations=numeric)
    deploy(cluster, namespace, "http", "http-plain")
    deploy(cluster, namespace, "tcp", "tcp-plain")  # the baseline for the transfer times
    injected = ["http-named", "tcp-named", "http-numeric", "tcp-numeric"]
    wait_serving(cluster, namespace, [*injected, "http-plain", "tcp-plain"])
    rolled_out = time.time() - start

    pods = {name: running_pod(cluster, namespace, name) for name in [*injected, "http-plain"]}
    names = {name: pod["metadata"]["name"] for name, pod in pods.items()}

    # The agents arrive, each with what the webhook gave it.
    arrived_at, agents = watcher.until(
        "agents of the four injected pods",
        lambda agents: {names[n] for n in injected} <= pods_of(agents),
        timeout=60,
    )
    by_pod = {a["pod"]: a for a in agents if a["namespace"] == namespace}
    assert set(by_pod) == {names[n] for n in injected}  # not the plain one
    named_http = by_pod[names["http-named"]]
    assert named_http["workload"] == ["DEPLOYMENT", "http-named"]
    assert named_http["container"] == "echo"
    assert named_http["ip"] == pods["http-named"]["status"]["podIP"]
    assert named_http["ports"] == [["http", 8080, 9900, False]]
    assert named_http["environment"]["POD_NAME"] == names["http-named"]
    assert named_http["environment"]["POD_NAMESPACE"] == namespace
    assert not any(k.startswith("KP_AGENT_") for k in named_http["environment"])
    assert by_pod[names["tcp-numeric"]]["ports"] == [
        ["tcp", 9000, 9900, True],
        ["", 8080, 9901, True],
    ]

    # What kubectl shows: the agent container, the renamed port, the init container.
    def pod_yaml(name: str) -> dict[str, Any]:
        return dict(
            yaml.safe_load(
                cluster.kubectl("get", "pod", names[name], "-n", namespace, "-o", "yaml")
            )
        )

    shown = pod_yaml("http-named")
    containers = {c["name"]: c for c in shown["spec"]["containers"]}
    assert set(containers) == {"echo", "kubepresence-agent"}
    assert [p["name"] for p in containers["echo"]["ports"]] == ["kp-http"]
    assert containers["kubepresence-agent"]["ports"][0]["name"] == "http"
    assert containers["kubepresence-agent"]["ports"][0]["containerPort"] == 9900
    agent_image = f"localhost/kubepresence-agent:{imagebuild.project_version()}"
    assert containers["kubepresence-agent"]["image"] == agent_image
    assert "initContainers" not in shown["spec"]
    shown = pod_yaml("tcp-numeric")
    [init] = shown["spec"]["initContainers"]
    assert init["name"] == "kubepresence-init"
    # The two numeric ports to the agent; the readiness probe's own port to the app.
    assert init["command"][3:] == ["9000:9900", "8080:9901", "9902:9000"]
    echo_probe = {c["name"]: c for c in shown["spec"]["containers"]}["echo"]["readinessProbe"]
    assert echo_probe["tcpSocket"]["port"] == 9902
    assert shown["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    described = cluster.kubectl("describe", "pod", names["tcp-numeric"], "-n", namespace)
    assert "kubepresence-agent:" in described
    assert "kubepresence-init:" in described
    plain = pod_yaml("http-plain")
    assert [c["name"] for c in plain["spec"]["containers"]] == ["echo"]
    assert [p["name"] for p in plain["spec"]["containers"][0]["ports"]] == ["http"]
    assert "kubepresence.io/traffic-agent" not in (plain["metadata"].get("annotations") or {})

    # The named Service now reaches the agent's port; the numeric one keeps its number.
    slices = cluster.get(
        "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=tcp-named"
    )
    assert [p["port"] for s in slices["items"] for p in s["ports"]] == [9900]

    # Traffic from inside the cluster, through the Services.
    client_pod = cluster.client_pod(namespace)
    tcp_numeric_agent = agent_pid(names["tcp-numeric"])
    http_numeric_agent = agent_pid(names["http-numeric"])
    redirected_before = (
        redirect_packets(tcp_numeric_agent, 9000),
        redirect_packets(http_numeric_agent, 8080),
    )
    small = traffic(
        cluster,
        namespace,
        client_pod,
        [
            http_job(cluster, namespace, "http-plain"),
            http_job(cluster, namespace, "http-named"),
            http_job(cluster, namespace, "http-numeric"),
            stream_job(cluster, namespace, "tcp-named", MIB, 1),
            stream_job(cluster, namespace, "tcp-numeric", MIB, 2),
        ],
    )
    baseline, *through_agents = small[:3]

    def comparable(answer: dict[str, Any]) -> dict[str, Any]:
        body = dict(answer["json"])
        headers = {k: v for k, v in body.pop("headers").items() if k != "Host"}
        body.pop("pod")
        body.pop("peer")  # the agent, or the caller: who connected differs by design
        return {"status": answer["status"], **body, "headers": headers}

    assert baseline["status"] == "HTTP/1.1 200 OK"
    assert comparable(baseline)["headers"]["X-Test"] == "kept"
    assert comparable(baseline)["body_length"] == 1000
    for answer, name in zip(through_agents, ["http-named", "http-numeric"], strict=True):
        assert comparable(answer) == comparable(baseline), name
        assert answer["json"]["pod"] == names[name]
    for result in small[3:]:
        assert result["bytes"] == MIB
        assert result["got"] == result["sent"]
    redirected_after = (
        redirect_packets(tcp_numeric_agent, 9000),
        redirect_packets(http_numeric_agent, 8080),
    )
    # Each connection's first packet passes the nat table once; the kubelet's probes go
    # through the probe port's rule instead (they keep asking the app).
    assert redirected_after[0] >= redirected_before[0] + 1
    assert redirected_after[1] >= redirected_before[1] + 1
    assert redirect_packets(tcp_numeric_agent, 9902) > 0

    # 100 MiB through each TCP echo, while the manager's and one agent's RSS are sampled.
    mgr = manager_pid(manager_ns)
    agent = agent_pid(names["tcp-named"])
    idle = {"manager": memory(mgr)["VmRSS"], "agent": memory(agent)["VmRSS"]}
    with Sampler({"manager": mgr, "agent": agent}) as sampler:
        big = traffic(
            cluster,
            namespace,
            client_pod,
            [
                stream_job(cluster, namespace, "tcp-named", BIG, 3),
                stream_job(cluster, namespace, "tcp-numeric", BIG, 4),
            ],
        )
    [baseline_big] = traffic(
        cluster, namespace, client_pod, [stream_job(cluster, namespace, "tcp-plain", BIG, 6)]
    )
    for result in [*big, baseline_big]:
        assert result["bytes"] == BIG
        assert result["got"] == result["sent"]
    arrivals = {name: round(watcher.first_seen[names[name]] - start, 2) for name in injected}
    report(
        {
            "scenario": "injection",
            "rollout_of_5_deployments_s": round(rolled_out, 2),
            "arrival_after_apply_s": arrivals,
            "all_arrived_after_apply_s": round(arrived_at - start, 2),
            "rss_kib_idle": idle,
            "rss_kib_peak_during_2x100MiB": sampler.peak,
            "agent_vmhwm_kib": memory(agent)["VmHWM"],
            "transfer_100MiB_echo_s": {
                "named": round(big[0]["seconds"], 2),
                "numeric": round(big[1]["seconds"], 2),
                "without_agent": round(baseline_big["seconds"], 2),
            },
        }
    )


def test_agents_leave_the_watch_within_the_ttl(
    cluster: Cluster, namespace: str, manager_ns: str, watcher_of: Callable[[str], Watcher]
) -> None:
    wait_webhook_effective(cluster, namespace)
    watcher = watcher_of(manager_ns)
    deploy(cluster, namespace, "tcp", "tcp-echo", annotations=INJECT, named=True)
    wait_serving(cluster, namespace, ["tcp-echo"])
    pod = running_pod(cluster, namespace, "tcp-echo")["metadata"]["name"]
    watcher.until("the agent", lambda agents: pod in pods_of(agents), timeout=60)

    # Silent (stopped, not departed): the session expires within the TTL.
    pid = agent_pid(pod)
    os.kill(pid, signal.SIGSTOP)
    stopped = time.time()
    try:
        gone_at, _ = watcher.until(
            "expiry of the stopped agent", lambda agents: pod not in pods_of(agents),
            timeout=SESSION_TTL + 10,
        )  # fmt: skip
    finally:
        os.kill(pid, signal.SIGCONT)
    silent_for = gone_at - stopped
    # It remains every 5 s: the expiry comes between TTL - 5 s and TTL (+1 s granularity).
    assert SESSION_TTL - 6 <= silent_for <= SESSION_TTL + 3, silent_for
    logs = cluster.kubectl("logs", "-n", manager_ns, f"deployment/{MANAGER}")
    assert "agent session" in logs
    assert f"({pod}) expired" in logs
    # Awake again: the manager forgot it, so it arrives again by itself.
    back_at, _ = watcher.until("the agent again", lambda agents: pod in pods_of(agents), timeout=30)

    # A deleted pod whose agent cannot depart (stopped again): the manager's pod watch sees
    # the deletionTimestamp and drops the agent at once. Without the watch it would stay
    # until its session expires: TTL - 5 s at the earliest (see above).
    os.kill(pid, signal.SIGSTOP)
    try:
        deleted = time.time()
        cluster.kubectl("delete", "pod", pod, "-n", namespace, "--wait=false")
        gone_at, _ = watcher.until(
            "the deleted pod's agent to go", lambda agents: pod not in pods_of(agents),
            timeout=SESSION_TTL,
        )  # fmt: skip
    finally:
        os.kill(pid, signal.SIGCONT)  # let it take its SIGTERM and end
    assert gone_at - deleted < SESSION_TTL - 6, gone_at - deleted
    logs = cluster.kubectl("logs", "-n", manager_ns, f"deployment/{MANAGER}")
    assert f"agent of {namespace}/{pod} left: its pod is terminating" in logs
    replaced_at, _agents = watcher.until(
        "the replacement pod's agent",
        lambda agents: any(a["pod"] != pod and a["namespace"] == namespace for a in agents),
        timeout=90,
    )
    report(
        {
            "scenario": "agent-expiry",
            "session_ttl_s": SESSION_TTL,
            "stopped_agent_gone_after_s": round(silent_for, 2),
            "woken_agent_back_after_s": round(back_at - stopped, 2),
            "deleted_pod_agent_gone_after_s": round(gone_at - deleted, 2),
            "replacement_agent_after_s": round(replaced_at - deleted, 2),
        }
    )


def test_a_deleted_workload_ends_its_intercept(
    cluster: Cluster, namespace: str, manager_ns: str
) -> None:
    wait_webhook_effective(cluster, namespace)
    deploy(cluster, namespace, "tcp", "tcp-echo", annotations=INJECT, named=True)
    wait_serving(cluster, namespace, ["tcp-echo"])
    client = Watcher(cluster, manager_ns, intercept=f"{namespace}/tcp-echo/tcp")
    try:
        client.until(
            "the intercept active",
            lambda intercepts: [i["state"] for i in intercepts] == ["ACTIVE"],
            timeout=60,
            key="intercepts",
        )
        deleted = time.time()
        cluster.kubectl("delete", "deployment", "tcp-echo", "-n", namespace, "--wait=false")
        ended_at, intercepts = client.until(
            "the intercept in error",
            lambda intercepts: [i["state"] for i in intercepts] == ["ERROR"],
            timeout=30,
            key="intercepts",
        )
    finally:
        client.stop()
    # The workload's watch says why (not "no agent", which its pods' going would say).
    assert intercepts[0]["message"] == "workload deleted", intercepts
    report(
        {
            "scenario": "workload-deleted",
            "intercept_error_after_delete_s": round(ended_at - deleted, 2),
        }
    )


def test_fail_open_and_reconnect(
    cluster: Cluster, namespace: str, manager_ns: str, watcher_of: Callable[[str], Watcher]
) -> None:
    wait_webhook_effective(cluster, namespace)
    watcher = watcher_of(manager_ns)
    numeric = {**INJECT, "kubepresence.io/inject-numeric-ports": "9000"}
    deploy(cluster, namespace, "tcp", "tcp-echo", annotations=numeric)
    wait_serving(cluster, namespace, ["tcp-echo"])
    pod = running_pod(cluster, namespace, "tcp-echo")["metadata"]["name"]
    watcher.until("the agent", lambda agents: pod in pods_of(agents), timeout=60)
    watcher.stop()  # its port-forward dies with the manager pod anyway

    cluster.kubectl("scale", f"deployment/{MANAGER}", "-n", manager_ns, "--replicas=0")
    wait_for(
        "the manager's pods to go",
        lambda: not cluster.get("pods", "-n", manager_ns, "-l", MANAGER_SELECTOR)["items"],
        timeout=60,
    )
    # The app does not need the manager.
    client_pod = cluster.client_pod(namespace)
    [result] = traffic(
        cluster, namespace, client_pod, [stream_job(cluster, namespace, "tcp-echo", MIB, 5)]
    )
    assert (result["bytes"], result["got"]) == (MIB, result["sent"])

    # A new annotated Deployment rolls out: the webhook fails open, the pod has no agent.
    start = time.monotonic()
    deploy(cluster, namespace, "http", "late", annotations=INJECT, named=True)
    wait_serving(cluster, namespace, ["late"], timeout=90)
    fail_open_rollout = time.monotonic() - start
    late = running_pod(cluster, namespace, "late")
    assert [c["name"] for c in late["spec"]["containers"]] == ["echo"]

    # The manager comes back: the running agent arrives again by itself.
    cluster.kubectl("scale", f"deployment/{MANAGER}", "-n", manager_ns, "--replicas=1")
    back = time.monotonic()
    cluster.kubectl("rollout", "status", f"deployment/{MANAGER}", "-n", manager_ns,
                    "--timeout=120s", timeout=130)  # fmt: skip
    watcher = watcher_of(manager_ns)
    watcher.until(
        "the agent to arrive again",
        lambda agents: pod in pods_of(agents),
        timeout=60,
        explain=lambda: agent_story(cluster, namespace, pod),
    )
    rearrived = time.monotonic() - back
    agent_log = cluster.kubectl("logs", "-n", namespace, pod, "-c", "kubepresence-agent")
    assert "the manager is not reachable" in agent_log
    assert "arrived at the manager" in agent_log
    assert " again:" in agent_log
    report(
        {
            "scenario": "fail-open",
            "rollout_with_manager_down_s": round(fail_open_rollout, 2),
            "agent_back_after_manager_scaled_up_s": round(rearrived, 2),
        }
    )
