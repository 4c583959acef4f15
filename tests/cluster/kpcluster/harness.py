"""What end-to-end tests need from the cluster: namespaces, workloads, exec, the workstation.

Used by tests/e2e/conftest.py; kept here so kubepresence's own e2e tests (and benchmarks)
share one implementation.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import kube, layout, lifecycle, manifests, network
from .commands import ClusterError, run, wait_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EchoWorkload:
    """A deployed echo server: its Service name, ClusterIP and port, and one pod."""

    kind: str
    name: str
    namespace: str
    service_ip: str
    service_port: int
    pod_name: str
    pod_ip: str
    pod_port: int


def _answers(workload: EchoWorkload) -> bool:
    """One echo round trip through the workload's ClusterIP, from the host."""
    address = (workload.service_ip, workload.service_port)
    payload = b"probe"
    try:
        if workload.kind == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(1)
                sock.sendto(payload, address)
                return sock.recv(100) == payload
        with socket.create_connection(address, timeout=2) as sock:
            if workload.kind == "http":
                sock.sendall(b"GET /probe HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                return sock.recv(100).startswith(b"HTTP/1.")
            sock.sendall(payload)
            return sock.recv(100) == payload
    except OSError:
        return False


class Cluster:
    """A running local cluster, as the tests see it."""

    def __init__(self) -> None:
        self.images = lifecycle.images()
        self._deleting: list[str] = []
        if "kubepresence-testapps" not in self.images:
            raise ClusterError(f"no image catalogue in {lifecycle.IMAGES_FILE}: is the cluster up?")

    @property
    def testapps_image(self) -> str:
        return self.images["kubepresence-testapps"]

    # --- kubectl --------------------------------------------------------------------------

    def kubectl(self, *args: str, timeout: float = 60, input_text: str | None = None) -> str:
        return kube.kubectl(*args, timeout=timeout, input_text=input_text)

    def get(self, *args: str) -> Any:
        return kube.get_json(*args)

    def apply(self, objects: Sequence[dict[str, Any]]) -> None:
        kube.apply(objects)

    # --- namespaces -----------------------------------------------------------------------

    @contextmanager
    def namespace(self, prefix: str = "e2e") -> Iterator[str]:
        """A fresh namespace, deleted afterwards whatever happened in between."""
        slug = "".join(c if c.isalnum() else "-" for c in prefix.lower())[:40].strip("-")
        name = f"{slug}-{secrets.token_hex(3)}"
        self.kubectl("create", "namespace", name)
        try:
            # Pods are refused until the namespace's default ServiceAccount exists.
            wait_for(
                f"default ServiceAccount in {name}",
                lambda: (
                    run(
                        [
                            layout.kubectl(),
                            "--kubeconfig",
                            layout.ADMIN_KUBECONFIG,
                            "get",
                            "sa",
                            "default",
                            "-n",
                            name,
                        ],
                        check=False,
                    ).returncode
                    == 0
                ),
                timeout=30,
            )
            yield name
        finally:
            # Deletion takes seconds (graceful pod stops, namespace controller); tests do not
            # wait for it one by one: wait_namespaces_gone() does, once, at the end.
            self.kubectl("delete", "namespace", name, "--wait=false")
            self._deleting.append(name)

    def wait_namespaces_gone(self, timeout: float = 180) -> None:
        """Wait until every namespace this object created and deleted is really gone."""
        if not self._deleting:
            return
        self.kubectl(
            "wait",
            "--for=delete",
            *(f"namespace/{n}" for n in self._deleting),
            f"--timeout={int(timeout)}s",
            timeout=timeout,
        )
        self._deleting.clear()

    # --- workloads ------------------------------------------------------------------------

    def deploy_echo(
        self,
        kind: str,
        namespace: str,
        name: str | None = None,
        timeout: float = 120,
        *,
        pod_annotations: dict[str, str] | None = None,
        named_target_port: bool = False,
    ) -> EchoWorkload:
        """Deploy an http/tcp/udp echo server with its Service and wait until it runs.

        `pod_annotations` and `named_target_port`: see `manifests.echo`.
        """
        if name is None:
            name = "echo" if kind == "http" else f"{kind}-echo"
        self.apply(
            manifests.echo(
                kind,
                name,
                namespace,
                self.testapps_image,
                pod_annotations=pod_annotations,
                named_target_port=named_target_port,
            )
        )
        kube.wait_rollout(name, namespace, timeout=timeout)
        workload = self.describe_echo(kind, name, namespace)
        # A finished rollout does not mean the Service works yet: the EndpointSlice and then
        # kube-proxy's rules follow (until then kube-proxy rejects: "connection refused").
        # Wait for exactly that, seen from the host, which reaches ClusterIPs directly.
        wait_for(
            f"Service {namespace}/{name} to answer on {workload.service_ip}",
            lambda: _answers(workload),
            timeout=60,
            interval=0.5,
        )
        return workload

    def deploy_echo_workload(
        self,
        workload_kind: str,
        namespace: str,
        name: str = "echo",
        replicas: int = 1,
        timeout: float = 120,
        *,
        named_target_port: bool = False,
        env: list[dict[str, Any]] | None = None,
        env_from: list[dict[str, Any]] | None = None,
        extra: Sequence[dict[str, Any]] = (),
    ) -> EchoWorkload:
        """The http echo server as a Deployment, StatefulSet or bare ReplicaSet (see
        `manifests.echo_workload`), with `extra` objects applied first; waits until all of
        its pods are Ready and its Service answers."""
        self.apply(
            [
                *extra,
                *manifests.echo_workload(
                    workload_kind,
                    name,
                    namespace,
                    self.testapps_image,
                    replicas,
                    named_target_port=named_target_port,
                    env=env,
                    env_from=env_from,
                ),
            ]
        )
        self.wait_pods_ready(namespace, f"app={name}", replicas, timeout=timeout)
        workload = self.describe_echo("http", name, namespace)
        wait_for(
            f"Service {namespace}/{name} to answer on {workload.service_ip}",
            lambda: _answers(workload),
            timeout=60,
            interval=0.5,
        )
        return workload

    def wait_pods_ready(
        self, namespace: str, selector: str, count: int, timeout: float = 120
    ) -> list[dict[str, Any]]:
        """Exactly `count` live pods match `selector` and all are Ready; returns them."""

        def ready() -> list[dict[str, Any]] | None:
            pods = [
                p
                for p in self.get("pods", "-n", namespace, "-l", selector)["items"]
                if not p["metadata"].get("deletionTimestamp")
            ]
            done = len(pods) == count and all(kube.is_ready(p) for p in pods)
            return pods if done else None

        return wait_for(
            f"{count} Ready pods {selector} in {namespace}", ready, timeout=timeout, interval=1
        )

    def describe_echo(self, kind: str, name: str, namespace: str) -> EchoWorkload:
        _, port, _, service_port = manifests.ECHO_KINDS[kind]
        svc = self.get("service", name, "-n", namespace)
        pods = self.get("pods", "-n", namespace, "-l", f"app={name}")["items"]
        running = [
            p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")
        ]
        if not running:
            raise ClusterError(f"no running pod for {namespace}/{name}")
        pod = running[0]
        return EchoWorkload(
            kind=kind,
            name=name,
            namespace=namespace,
            service_ip=svc["spec"]["clusterIP"],
            service_port=service_port,
            pod_name=pod["metadata"]["name"],
            pod_ip=pod["status"]["podIP"],
            pod_port=port,
        )

    def client_pod(self, namespace: str, name: str = "client", timeout: float = 120) -> str:
        """A sleeping pod with python3 in it, ready for `exec`; returns its name."""
        self.apply([manifests.client_pod(name, namespace, self.testapps_image)])
        kube.wait_pod_ready(name, namespace, timeout=timeout)
        return name

    def run_pod(
        self, namespace: str, name: str, image: str, command: Sequence[str], timeout: float = 120
    ) -> tuple[str, str]:
        """Run a one-shot pod to completion; return its final phase and its log."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": list(command),
                    }
                ],
            },
        }
        self.apply([pod])

        def finished() -> str | None:
            phase = self.get("pod", name, "-n", namespace)["status"].get("phase")
            return str(phase) if phase in ("Succeeded", "Failed") else None

        phase = wait_for(f"pod {namespace}/{name} to finish", finished, timeout=timeout, interval=1)
        return phase, self.kubectl("logs", "-n", namespace, name)

    def exec_in_pod(
        self, namespace: str, pod: str, argv: Sequence[str], timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [
                layout.kubectl(),
                "--kubeconfig",
                layout.ADMIN_KUBECONFIG,
                "exec",
                "-n",
                namespace,
                pod,
                "--",
                *argv,
            ],
            timeout=timeout,
            check=check,
        )

    def python_in_pod(self, namespace: str, pod: str, code: str, timeout: float = 60) -> Any:
        """Run Python code in a pod; it must print one JSON document, which is returned."""
        out = self.exec_in_pod(namespace, pod, ["python3", "-c", code], timeout=timeout).stdout
        return json.loads(out)

    # --- workstation ----------------------------------------------------------------------

    def workstation_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", layout.WORKSTATION_NETNS, *argv]

    def on_workstation(
        self, argv: Sequence[str], timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the workstation namespace with its kubeconfig and kubectl on PATH."""
        return run(
            self.workstation_argv(argv),
            timeout=timeout,
            check=check,
            env=kube.kubectl_env(layout.WORKSTATION_KUBECONFIG),
        )

    def start_on_workstation(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start a long-running workstation command (e.g. a port-forward); caller stops it."""
        return subprocess.Popen(
            self.workstation_argv(argv),
            env=kube.kubectl_env(layout.WORKSTATION_KUBECONFIG),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    # --- guard ----------------------------------------------------------------------------

    def guard_counters(self) -> dict[str, int]:
        return network.guard_counters()
