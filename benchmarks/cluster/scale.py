"""The manager at scale (issue 17 item 4): one traffic manager serving many client sessions,
flows and intercepts, against the same manager serving one session, in the same run.

What it deploys, in a fresh namespace `bench-scale-<hex>` (deleted afterwards, also on
failure): a traffic manager of its own in `<namespace>-mgr` (userd's on-demand install,
namespaced RBAC over the bench namespace, a 1 GiB memory limit so that the RSS is measured
rather than capped; uninstalled afterwards), the echo server every flow dials, one
Deployment with no replicas per intercept (annotated for injection already, so that
CreateIntercept's injection finds nothing to do and no pod rolls), and a pod of the
manager image that runs the simulated sessions (scaleclient.py, from a ConfigMap; it speaks the real
protocol straight to the manager pod's gRPC port: no port-forward through the API server).

Two processes in that pod, so that the probe's timings do not wait on the load's event
loop: the *probe* (one client session with its share of flows and one intercept, whose
agent it also plays) times new dials and keep-alive requests one at a time; the *load*
(all the other sessions, flows, intercepts and agents) holds everything meanwhile. The
1-session phase runs the probe alone, then the N-session phase runs the load and the
same probe. The manager container's RSS (peak, process tree) and CPU are sampled through
both phases from the node (this machine).
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kpcluster import imagebuild, kube, layout
from kpcluster.commands import ClusterError
from kpcluster.harness import Cluster
from kubernetes_asyncio import client
from workstation_cli import uninstall_manager

from benchmarks.cluster import processes, report
from kubepresence.protocol.workloads import (
    INJECT_ENABLED,
    INJECT_MANAGER_NAMESPACE,
    INJECT_TRAFFIC_AGENT,
)
from kubepresence.userd.core.manifests import ManagerInstall, Resources
from kubepresence.userd.k8s import installing
from kubepresence.userd.k8s.apiclient import load_configuration

log = logging.getLogger(__name__)

SOURCE = (Path(__file__).resolve().parent / "scaleclient.py").read_text()
ECHO = "scale-echo"
ECHO_PORT = 9000
CLIENT_POD = "scale-clients"
# The program reaches the pods as a ConfigMap volume: its source is too long for an exec
# request's command (URL query parameters).
PROGRAM_CONFIGMAP = "scale-client"
PROGRAM = ["python3", "/bench/scaleclient.py"]
MOUNTED_PROGRAM = {
    "volumes": [{"name": "program", "configMap": {"name": PROGRAM_CONFIGMAP}}],
    "mounts": [{"name": "program", "mountPath": "/bench", "readOnly": True}],
}
MANAGER_CONTAINER = "manager"
MANAGER_GRPC_PORT = 8081
MANAGER_MEMORY_LIMIT = "1Gi"
MANAGER_LABEL = "app.kubernetes.io/name=kubepresence-manager"


@dataclass(frozen=True)
class ScaleSizes:
    """How big the N-session phase is, and how much the probe measures (in both phases)."""

    sessions: int
    flows: int
    intercepts: int
    probe_dials: int
    probe_requests: int
    background_interval: float  # seconds between one held flow's keep-alive requests
    setup_deadline: float  # seconds for a phase's sessions, flows and intercepts
    probe_deadline: float


FULL = ScaleSizes(
    sessions=200,
    flows=2000,
    intercepts=100,
    probe_dials=300,
    probe_requests=1000,
    background_interval=10.0,
    setup_deadline=300.0,
    probe_deadline=120.0,
)
QUICK = ScaleSizes(
    sessions=5,
    flows=20,
    intercepts=3,
    probe_dials=30,
    probe_requests=100,
    background_interval=2.0,
    setup_deadline=60.0,
    probe_deadline=30.0,
)


def workload_names(count: int) -> list[str]:
    return [f"scale-wl-{i:03d}" for i in range(count)]


def _deployment(
    name: str, namespace: str, image: str, command: list[str], replicas: int, **template: Any
) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, **template},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": command,
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ],
                },
            },
        },
    }


def manifests(
    namespace: str, manager_namespace: str, testapps: str, manager_image: str, intercepts: int
) -> list[dict[str, Any]]:
    """The echo server, the intercepted workloads (no replicas) and the clients' pod."""
    annotations = {
        INJECT_TRAFFIC_AGENT: INJECT_ENABLED,
        INJECT_MANAGER_NAMESPACE: manager_namespace,
    }
    program = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": PROGRAM_CONFIGMAP, "namespace": namespace},
        "data": {"scaleclient.py": SOURCE},
    }
    echo = _deployment(ECHO, namespace, testapps, [*PROGRAM, "echo", str(ECHO_PORT)], 1)
    echo["spec"]["template"]["spec"]["volumes"] = MOUNTED_PROGRAM["volumes"]
    container = echo["spec"]["template"]["spec"]["containers"][0]
    container["volumeMounts"] = MOUNTED_PROGRAM["mounts"]
    container["ports"] = [{"name": "echo", "containerPort": ECHO_PORT}]
    container["readinessProbe"] = {"tcpSocket": {"port": ECHO_PORT}, "periodSeconds": 1}
    workloads = [
        _deployment(name, namespace, testapps, ["sleep", "infinity"], 0, annotations=annotations)
        for name in workload_names(intercepts)
    ]
    clients = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": CLIENT_POD, "namespace": namespace},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "volumes": MOUNTED_PROGRAM["volumes"],
            "containers": [
                {
                    "name": "clients",
                    "volumeMounts": MOUNTED_PROGRAM["mounts"],
                    "image": manager_image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", "import time; time.sleep(7200)"],
                    "env": [
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                    ],
                }
            ],
        },
    }
    return [program, echo, *workloads, clients]


async def _install_manager(namespace: str, bench_namespace: str) -> str:
    install = ManagerInstall(
        namespace=namespace,
        rbac_scope="namespaced",
        rbac_namespaces=(bench_namespace,),
        resources=Resources(limits_memory=MANAGER_MEMORY_LIMIT),
    )
    conf = await load_configuration(layout.ADMIN_KUBECONFIG)
    async with client.ApiClient(conf) as api:
        return await installing.ensure_manager(api, install, log.info, wait_seconds=180)


def _event(process: subprocess.Popen[str], name: str, timeout: float) -> dict[str, Any]:
    """The next JSON line of the program, which must be event `name` (bounded)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = process.stdout.readline()
        if not line:
            raise ClusterError(f"the scale client ended (exit {process.wait(10)}) before {name}")
        if not line.startswith("{"):
            log.info("scale client: %s", line.rstrip())
            continue
        answer: dict[str, Any] = json.loads(line)
        if answer.get("event") != name:
            raise ClusterError(f"the scale client said {answer.get('event')} before {name}")
        return answer
    raise ClusterError(f"the scale client did not say {name} within {timeout:.0f} s")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


class ScaleRun:
    """One run of the scale benchmark; `results` fills up as it goes (partial on failure)."""

    def __init__(self, sizes: ScaleSizes, *, work_dir: Path) -> None:
        self.sizes = sizes
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self.cluster = Cluster()
        self.phases: dict[str, Any] = {}
        self.manager: dict[str, Any] = {}
        self.problems: list[str] = []
        self._started: list[subprocess.Popen[str]] = []

    def results(self) -> dict[str, Any]:
        return {
            "sizes": asdict(self.sizes),
            "manager": self.manager,
            "phases": self.phases,
            "problems": self.problems,
        }

    def run(self) -> None:
        try:
            with self.cluster.namespace("bench-scale") as namespace:
                manager_namespace = f"{namespace}-mgr"
                try:
                    self._in_namespace(namespace, manager_namespace)
                finally:
                    for process in self._started:
                        _stop(process)
                    uninstall_manager(self.cluster, manager_namespace)
                    try:
                        self.cluster.kubectl(
                            "wait",
                            "--for=delete",
                            f"namespace/{manager_namespace}",
                            "--timeout=180s",
                            timeout=200,
                        )
                    except ClusterError as error:
                        self.problems.append(f"manager namespace not gone: {error}")
        finally:
            self.cluster.wait_namespaces_gone()

    def _in_namespace(self, namespace: str, manager_namespace: str) -> None:
        cluster, sizes = self.cluster, self.sizes
        log.info("scale: installing a manager in %s", manager_namespace)
        self.manager["install"] = asyncio.run(_install_manager(manager_namespace, namespace))
        manager_image = f"localhost/kubepresence-manager:{imagebuild.project_version()}"
        cluster.apply(
            manifests(
                namespace,
                manager_namespace,
                cluster.testapps_image,
                manager_image,
                sizes.intercepts,
            )
        )
        kube.wait_rollout(ECHO, namespace, timeout=120)
        kube.wait_pod_ready(CLIENT_POD, namespace, timeout=120)
        echo_ip = self._pod_ip(namespace, f"app={ECHO}")
        manager_ip = self._pod_ip(manager_namespace, MANAGER_LABEL)
        pid = processes.container_pid(manager_namespace, MANAGER_CONTAINER)
        if pid is None:
            raise ClusterError(f"no manager container in {manager_namespace}")
        self.manager["open_files_limit"] = _open_files_limit(pid)
        self.manager["memory_limit"] = MANAGER_MEMORY_LIMIT
        pids: dict[str, int | None] = {"manager": pid}

        workloads = workload_names(sizes.intercepts)
        per_session = sizes.flows // sizes.sessions
        base = {
            "manager_host": manager_ip,
            "manager_port": MANAGER_GRPC_PORT,
            "echo_host": echo_ip,
            "echo_port": ECHO_PORT,
            "namespace": namespace,
            "setup_deadline": sizes.setup_deadline,
            "background_interval": sizes.background_interval,
            "probe_deadline": sizes.probe_deadline,
            "hold": sizes.setup_deadline * 2 + sizes.probe_deadline + 120,
        }
        probe = {
            **base,
            "name": "probe",
            "sessions": 1,
            "flows": per_session,
            "workloads": workloads[:1],
            "probe_dials": sizes.probe_dials,
            "probe_requests": sizes.probe_requests,
        }
        load = {
            **base,
            "name": "load",
            "sessions": sizes.sessions - 1,
            "flows": sizes.flows - per_session,
            "workloads": workloads[1:],
        }
        self.phases["one"] = self._phase("1 session", namespace, pids, probe, None)
        self.phases["many"] = self._phase(
            f"{sizes.sessions} sessions", namespace, pids, probe, load
        )
        with processes.sampled(pids) as after:
            pass
        self.manager["rss_after_mib"] = after.rss_peak_mib.get("manager")

    def _pod_ip(self, namespace: str, selector: str) -> str:
        for pod in self.cluster.get("pods", "-n", namespace, "-l", selector)["items"]:
            status = pod["status"]
            if status.get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
                return str(status["podIP"])
        raise ClusterError(f"no running pod {selector} in {namespace}")

    def _start(self, namespace: str, spec: dict[str, Any], role: str) -> subprocess.Popen[str]:
        argv = [
            str(layout.kubectl()),
            "--kubeconfig",
            str(layout.ADMIN_KUBECONFIG),
            "exec",
            "-i",
            "-n",
            namespace,
            CLIENT_POD,
            "--",
            *PROGRAM,
            "sessions",
            json.dumps(spec),
        ]
        with (self.work_dir / f"scale-{role}.log").open("a") as errors:
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True
            )
        self._started.append(process)
        return process

    def _finish(self, process: subprocess.Popen[str]) -> dict[str, Any]:
        """End a program (its stdin ends: it departs) and return what it said last."""
        assert process.stdin is not None
        process.stdin.close()
        done = _event(process, "done", 120)
        process.wait(30)
        return done

    def _phase(
        self,
        label: str,
        namespace: str,
        pids: dict[str, int | None],
        probe_spec: dict[str, Any],
        load_spec: dict[str, Any] | None,
    ) -> dict[str, Any]:
        log.info("scale: %s", label)
        setup_timeout = self.sizes.setup_deadline + 60
        with processes.sampled(pids) as before:
            pass
        events: dict[str, dict[str, Any]] = {}
        with processes.sampled(pids) as whole:
            load = None
            if load_spec is not None:
                load = self._start(namespace, load_spec, "load")
                events["load ready"] = _event(load, "ready", setup_timeout)
            probe = self._start(namespace, probe_spec, "probe")
            events["probe ready"] = _event(probe, "ready", setup_timeout)
            with processes.sampled(pids) as steady:
                started = time.monotonic()
                events["measured"] = _event(probe, "measured", self.sizes.probe_deadline + 60)
                steady_s = time.monotonic() - started
            events["probe done"] = self._finish(probe)
            if load is not None:
                events["load done"] = self._finish(load)
        phase = report.scale_phase(
            events,
            sessions=probe_spec["sessions"] + (load_spec or {}).get("sessions", 0),
            flows=probe_spec["flows"] + (load_spec or {}).get("flows", 0),
            intercepts=len(probe_spec["workloads"]) + len((load_spec or {}).get("workloads", [])),
            rss_before_mib=before.rss_peak_mib.get("manager"),
            rss_peak_mib=whole.rss_peak_mib.get("manager"),
            cpu_total_s=whole.cpu_seconds.get("manager"),
            cpu_steady_s=steady.cpu_seconds.get("manager"),
            steady_s=steady_s,
        )
        if phase["errors"]:
            self.problems.append(f"{label}: errors {phase['errors']}")
        log.info(
            "scale %s: %s",
            label,
            {k: v for k, v in phase.items() if k not in ("raw_samples", "errors")},
        )
        return phase


def _open_files_limit(pid: int) -> str | None:
    """The manager's soft and hard limits on open files, as /proc says them."""
    try:
        lines = Path(f"/proc/{pid}/limits").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("Max open files"):
            return " ".join(line.split()[3:5])
    return None
