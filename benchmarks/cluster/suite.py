"""The cluster suite: deploy, measure every path, tear down (also on failure).

Order: the baselines first (direct from the node, `kubectl port-forward` from ws1, a pod
through the Service to the app), then, holding the ws1 VIF lock, one kubepresence session:
connect (installing its own manager, then again with it installed), outbound through the
VIF by service name, an intercept (on-demand injection), leave, a timed intercept with the
agent present, inbound from the cluster pod to a server on the workstation, leave, quit.
"""

from __future__ import annotations

import json
import logging
import secrets
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kpcluster import kube, layout, manifests
from kpcluster.commands import ClusterError, wait_for
from kpcluster.harness import Cluster
from workstation_cli import Workstation, uninstall_manager, ws1_vif_lock

from benchmarks.cluster import clients, processes, profiling, workload
from benchmarks.cluster.clients import PathResult, Sizes
from benchmarks.cluster.report import CLI_BASELINE

log = logging.getLogger(__name__)

PORT_FORWARD_PORT = 18080
LOCAL_PORT = 18090
CLIENT_POD = "bench-client"
AGENT_CONTAINER = "kubepresence-agent"
MANAGER_CONTAINER = "manager"
OTHER_SESSION = "another kubepresence session is connected"
OTHER_SESSION_WAIT = 900.0


def _wait_line(process: subprocess.Popen[str], want: str, timeout: float) -> str:
    """Read the process's stdout until a line containing `want` (bounded)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = process.stdout.readline()
        if not line:
            break
        if want in line:
            return line
    raise ClusterError(f"no line with {want!r} from {process.args!r} within {timeout:.0f} s")


def _stop(process: subprocess.Popen[Any]) -> None:
    """End a process this suite started, by its handle."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def port_forward(cluster: Cluster, namespace: str, pod: str, log_dir: Path) -> Iterator[int]:
    """`kubectl port-forward` (the real binary) from ws1 to the pod; killed afterwards."""
    argv = cluster.workstation_argv(
        [
            str(layout.kubectl()),
            "port-forward",
            "-n",
            namespace,
            f"pod/{pod}",
            f"{PORT_FORWARD_PORT}:{workload.POD_PORT}",
            "--address",
            "127.0.0.1",
        ]
    )
    # Its output goes to a file: a pipe nobody reads would fill up and stall kubectl.
    output = log_dir / "port-forward.log"
    with output.open("w") as sink:
        process = subprocess.Popen(
            argv, env=kube.kubectl_env(layout.WORKSTATION_KUBECONFIG), stdout=sink, stderr=sink
        )
    try:
        wait_for(
            "kubectl port-forward to listen",
            lambda: "Forwarding from" in output.read_text() or process.poll() is not None,
            timeout=30,
            interval=0.2,
        )
        if process.poll() is not None:
            raise ClusterError(f"kubectl port-forward exited: {output.read_text()}")
        yield PORT_FORWARD_PORT
    finally:
        _stop(process)


@contextmanager
def workstation_server(cluster: Cluster) -> Iterator[None]:
    """The benchmark server on the workstation (127.0.0.1:LOCAL_PORT in ws1)."""
    argv = [sys.executable, "-c", workload.SERVER_SOURCE, str(LOCAL_PORT), workload.WORKSTATION]
    process = subprocess.Popen(
        cluster.workstation_argv([*argv, "127.0.0.1"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_line(process, "ready", 30)
        yield
    finally:
        _stop(process)


def _client_pod(cluster: Cluster, namespace: str) -> str:
    """A sleeping pod to run clients in, without the e2e client's memory limit (the
    concurrent measurement runs a thousand threads in it)."""
    pod = manifests.client_pod(CLIENT_POD, namespace, cluster.testapps_image)
    pod["spec"]["containers"][0]["resources"].pop("limits", None)
    cluster.apply([pod])
    kube.wait_pod_ready(CLIENT_POD, namespace, timeout=120)
    return CLIENT_POD


def _bench_pod(cluster: Cluster, namespace: str) -> tuple[str, str]:
    """Name and IP of the running benchmark server pod."""
    pods = cluster.get("pods", "-n", namespace, "-l", f"app={workload.NAME}")["items"]
    for pod in pods:
        status = pod["status"]
        deleting = pod["metadata"].get("deletionTimestamp")
        if status.get("phase") == "Running" and status.get("podIP") and not deleting:
            return str(pod["metadata"]["name"]), str(pod["status"]["podIP"])
    raise ClusterError(f"no running {workload.NAME} pod in {namespace}")


def _kp(ws: Workstation, *args: str, timeout: float = 240) -> float:
    """Run a kubepresence command on the workstation; its duration in seconds."""
    started = time.monotonic()
    result = ws.kp(*args, timeout=timeout)
    if result.returncode != 0:
        raise ClusterError(f"kubepresence {' '.join(args)}: {result.stderr.strip()}\n{ws.logs()}")
    return time.monotonic() - started


def _connect(ws: Workstation, *args: str) -> tuple[float, int]:
    """`kubepresence connect`; its duration in seconds and the attempts it took. ws1 has
    room for one session: one that did not take the ws1 lock is waited out (bounded), and
    only the connect that succeeds is timed."""
    deadline = time.monotonic() + OTHER_SESSION_WAIT
    attempts = 0
    while True:
        attempts += 1
        started = time.monotonic()
        result = ws.kp("connect", *args, timeout=240)
        if result.returncode == 0:
            return time.monotonic() - started, attempts
        if OTHER_SESSION not in result.stderr or time.monotonic() > deadline:
            raise ClusterError(f"kubepresence connect: {result.stderr.strip()}\n{ws.logs()}")
        log.info("another session holds ws1 without the lock: %s", result.stderr.strip())
        time.sleep(2)


class Run:
    """One run of the suite; `results` fills up as it goes (partial on failure)."""

    def __init__(self, sizes: Sizes, *, quick: bool, profile: bool, work_dir: Path) -> None:
        self.sizes = sizes
        self.quick = quick
        self.profile = profile
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self.cluster = Cluster()
        self.paths: dict[str, PathResult] = {}
        self.timings: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}
        self.profiles: dict[str, Any] = {}
        self.problems: list[str] = []

    def results(self) -> dict[str, Any]:
        return {
            "sizes": vars(self.sizes),
            "paths": {name: result.summary() for name, result in self.paths.items()},
            "timings": self.timings,
            "usage": self.usage,
            "profile": self.profiles,
            "problems": self.problems,
        }

    def measure(self, client: clients.Client) -> PathResult:
        log.info("measuring %s", client.path)
        result = clients.measure(client, self.sizes)
        self.paths[client.path] = result
        return result

    def run(self) -> None:
        try:
            with self.cluster.namespace("kp-bench") as namespace:
                self._in_namespace(namespace)
        finally:
            self.cluster.wait_namespaces_gone()

    def _in_namespace(self, namespace: str) -> None:
        cluster = self.cluster
        cluster.apply(workload.manifests(namespace, cluster.testapps_image))
        client_pod = _client_pod(cluster, namespace)
        kube.wait_rollout(workload.NAME, namespace, timeout=120)
        pod, pod_ip = _bench_pod(cluster, namespace)
        service = f"{workload.NAME}.{namespace}"
        in_cluster = clients.in_pod("in-cluster (no intercept)", namespace, client_pod, service, 80)
        # The Service answers once its EndpointSlice reached kube-proxy.
        waited = in_cluster.run("poll", workload.APP, 60, timeout=90)
        if "error" in waited:
            raise ClusterError(f"the {service} Service does not answer: {waited}")

        self.measure(clients.on_node("direct", pod_ip, workload.POD_PORT))
        with port_forward(cluster, namespace, pod, self.work_dir) as port:
            self.measure(clients.on_workstation("kubectl port-forward", "127.0.0.1", port))
        self.measure(in_cluster)
        log.info("waiting for the ws1 VIF lock (other kubepresence sessions in ws1)")
        waiting = time.monotonic()
        with ws1_vif_lock():
            self.timings["waited_for_ws1_lock_s"] = round(time.monotonic() - waiting, 1)
            self._kubepresence(namespace, client_pod, service)

    def _kubepresence(self, namespace: str, client_pod: str, service: str) -> None:
        cluster = self.cluster
        manager_namespace = f"kp-bench-mgr-{secrets.token_hex(3)}"
        home = Path(tempfile.mkdtemp(prefix="kp-bench-"))
        ws = Workstation(cluster, home)
        connect = ["--manager-namespace", manager_namespace]
        connect += ["--mapped-namespaces", namespace]
        try:
            seconds, attempts = _connect(ws, *connect)
            # A refused attempt (ws1 busy) had installed the manager already.
            installing = round(seconds, 2) if attempts == 1 else None
            self.timings["connect_installing_manager_s"] = installing
            times = []
            for _ in range(1 if self.quick else 3):
                _kp(ws, "quit", timeout=60)
                times.append(_connect(ws, *connect)[0])
            self.timings["connect_s_samples"] = [round(t, 2) for t in times]
            self.timings["connect_s"] = round(statistics.median(times), 2)
            self.timings["connect_s_min"] = round(min(times), 2)
            self.timings["cli"] = self._cli_times(ws, namespace)
            self._outbound(ws, manager_namespace, service)
            with workstation_server(cluster):
                self._inbound(ws, namespace, manager_namespace, client_pod, service)
        finally:
            ws.kp("leave", workload.NAME, timeout=60)
            ws.kp("quit", timeout=60)
            uninstall_manager(cluster, manager_namespace)
            # The daemons' logs stay with the run's other working files.
            logs = home / "state" / "kubepresence"
            if logs.is_dir():
                shutil.copytree(logs, self.work_dir / "logs", dirs_exist_ok=True)
            shutil.rmtree(home, ignore_errors=True)

    def _cli_times(self, ws: Workstation, namespace: str) -> dict[str, Any]:
        """How long the CLI takes to answer with the daemons running (connected), beside
        `kubectl version --client` run the same way in ws1, in the same minute."""
        environment = [f"{k}={v}" for k, v in ws.env.items()]
        completing = ["_KUBEPRESENCE_COMPLETE=complete_bash", "COMP_WORDS=kubepresence st"]
        commands = {
            CLI_BASELINE: ["env", *environment, str(layout.kubectl()), "version", "--client"],
            "kubepresence version": ws.kp_argv("version"),
            "kubepresence status": ws.kp_argv("status"),
            "kubepresence list": ws.kp_argv("list", "-n", namespace),
            "kubepresence completion": ["env", *completing, "COMP_CWORD=1", *ws.kp_argv()],
        }
        spec = json.dumps({"rounds": 2 if self.quick else 7, "commands": commands})
        result = self.cluster.on_workstation(
            [sys.executable, str(Path(__file__).with_name("commandtimes.py")), spec],
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            self.problems.append(f"CLI timings: {result.stderr.strip()[-500:]}")
            return {}
        times: dict[str, Any] = json.loads(result.stdout)
        log.info("CLI: %s", {k: v["median_s"] for k, v in times.items()})
        return times

    def _pids(self, ws: Workstation, manager_namespace: str) -> dict[str, int | None]:
        return {
            "userd": processes.userd_pid(ws),
            "rootd": ws.rootd_pid(),
            "manager": processes.container_pid(manager_namespace, MANAGER_CONTAINER),
        }

    def _outbound(self, ws: Workstation, manager_namespace: str, service: str) -> None:
        client = clients.on_workstation("kubepresence outbound", service, workload.SERVICE_PORT)
        result = PathResult(client.path)
        self.paths[client.path] = result
        pids = self._pids(ws, manager_namespace)
        with processes.sampled(pids) as usage:
            moved = clients.bulk(client, self.sizes, result)
        self._record_usage("outbound", usage, moved)
        clients.requests(client, self.sizes, result)
        if self.profile:
            self._profile("outbound", client, pids)

    def _profile(self, name: str, client: clients.Client, pids: dict[str, int | None]) -> None:
        """One more transfer each way and one more keep-alive run, with py-spy on the
        processes that carry them."""
        runs: dict[str, tuple[object, ...]] = {
            "download": ("download", self.sizes.bulk_mib),
            "upload": ("upload", self.sizes.bulk_mib),
            "keep-alive requests": ("latency", self.sizes.keepalive_requests, "keepalive"),
        }
        for mode, (command, *arguments) in runs.items():
            out_dir = self.work_dir / "profile" / f"{name}-{mode.replace(' ', '-')}"
            with profiling.recording(pids, out_dir) as found:
                answer = client.run(
                    str(command),
                    *arguments,
                    self.sizes.deadline,
                    timeout=self.sizes.deadline + 60,
                )
            found["transfer"] = {k: answer.get(k) for k in ("seconds", "error")}
            self.profiles[f"{name} {mode}"] = found

    def _inbound(
        self, ws: Workstation, namespace: str, manager_namespace: str, client_pod: str, service: str
    ) -> None:
        intercept = ["intercept", workload.NAME, "--port", f"{LOCAL_PORT}:{workload.PORT_NAME}"]
        intercept += ["-n", namespace]
        self.timings["intercept_injecting_agent_s"] = round(_kp(ws, *intercept, timeout=300), 2)
        _kp(ws, "leave", workload.NAME, timeout=60)
        poller = clients.in_pod("poll", namespace, client_pod, service, workload.SERVICE_PORT)
        waited = poller.run("poll", workload.APP, 60, timeout=90)
        if "error" in waited:
            raise ClusterError(f"the app does not answer after leave: {waited}")
        # Timed: from the intercept command's start until a cluster pod's request (one
        # every 20 ms) is answered by the workstation's server. The agent is there already.
        process = poller.start("poll", workload.WORKSTATION, 60)
        try:
            _wait_line(process, "polling", 30)
            started = time.time()
            self.timings["intercept_command_s"] = round(_kp(ws, *intercept, timeout=120), 2)
            output, _ = process.communicate(timeout=90)
        finally:
            _stop(process)
        answer = json.loads(output.strip().splitlines()[-1])
        if "first" in answer:
            self.timings["intercept_to_first_request_s"] = round(answer["first"] - started, 2)
        else:
            self.problems.append(f"intercept: no request reached the workstation: {answer}")

        client = clients.in_pod("kubepresence inbound", namespace, client_pod, service, 80)
        result = PathResult(client.path)
        self.paths[client.path] = result
        pids = self._pids(ws, manager_namespace)
        pids["agent"] = processes.container_pid(namespace, AGENT_CONTAINER, workload.NAME)
        with processes.sampled(pids) as usage:
            moved = clients.bulk(client, self.sizes, result)
        self._record_usage("inbound", usage, moved)
        clients.requests(client, self.sizes, result)
        if self.profile:
            self._profile("inbound", client, {k: pids[k] for k in ("userd", "agent", "manager")})
        _kp(ws, "leave", workload.NAME, timeout=60)

    def _record_usage(self, name: str, usage: processes.Usage, moved: int) -> None:
        gib = moved / (1 << 30)
        self.usage[name] = {
            "gib_moved": round(gib, 3),
            "rss_peak_mib": usage.rss_peak_mib,
            "cpu_seconds": usage.cpu_seconds,
            "cpu_seconds_per_gib": {
                role: round(seconds / gib, 2) if gib else None
                for role, seconds in usage.cpu_seconds.items()
            },
        }
        log.info("usage %s: %s", name, self.usage[name])
