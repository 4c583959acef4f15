"""`kubepresence intercept --mount` on the real cluster: the app's volumes on the workstation.

Scenarios (the echo Deployment with an emptyDir at /data and a ConfigMap at /config):
- a file the app writes into its volume reads back under the mount on the workstation, and
  a file written locally under the mount appears in the pod; a read-only volume stays
  read-only; `list` and `status` (-o json) show where the volumes are mounted;
- `leave` unmounts: the mount point is no mount any more, no sshfs process is left, and the
  directory the intercept made for it is gone; `quit` unmounts too;
- `intercept … -- CMD` gives CMD the mount in KUBEPRESENCE_ROOT (a temporary directory by
  default), unmounted when CMD ends; `--mount=false` mounts nothing;
- bad input: a mount point that is an existing file is refused in one line, with a non-zero
  exit, and leaves no intercept behind;
- a workstation without sshfs: `intercept` warns in one line that the volumes are not
  mounted, and the intercept works (a cluster pod's request reaches the workstation).

Measured: reading and writing a 64 MiB file through the mount (printed).

The workstation is the `ws1` network namespace; `ip netns exec` gives every command there
a mount namespace of its own, so the mount lives in the user daemon's: the test looks at
it with `nsenter --mount` into userd (on a real workstation every process sees it).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kpcluster import kube, layout, manifests
from kpcluster.harness import Cluster
from workstation_cli import BIN, Workstation, command_lines, uninstall_manager, ws1_vif_lock
from workstation_servers import PROGRAMS, await_listening

FROM_POD = "written by the app in its pod\n"
FROM_WS = "written on the workstation\n"
BIG_MIB = 64


@dataclass
class Session:
    ws: Workstation
    namespace: str
    pod: str
    manager_namespace: str


def echo_with_volumes(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    objects = manifests.echo(
        "http", "echo", namespace, cluster.testapps_image, named_target_port=True
    )
    deployment = objects[0]
    pod_spec = deployment["spec"]["template"]["spec"]
    pod_spec["volumes"] = [
        {"name": "data", "emptyDir": {}},
        {"name": "config", "configMap": {"name": "echo-config"}},
    ]
    container = pod_spec["containers"][0]
    container["volumeMounts"] = [
        {"name": "data", "mountPath": "/data"},
        {"name": "config", "mountPath": "/config", "readOnly": True},
    ]
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "echo-config", "namespace": namespace},
        "data": {"greeting": "hello from a config map"},
    }
    return [config, *objects]


@pytest.fixture(scope="module")
def session(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    with cluster.namespace("mount") as namespace, ws1_vif_lock():
        ws = Workstation(cluster, tmp_path_factory.mktemp("ws"))
        manager_namespace = f"kp-mgr-{secrets.token_hex(3)}"
        try:
            cluster.apply(echo_with_volumes(cluster, namespace))
            cluster.wait_pods_ready(namespace, "app=echo", 1)
            connected = ws.kp("connect", "--manager-namespace", manager_namespace)
            assert connected.returncode == 0, connected.stderr + ws.log("userd")
            # Inject the agent first (a rollout: a fresh pod with a fresh emptyDir).
            injected = ws.kp("intercept", "echo", "--port", "8090:http", "-n", namespace)
            assert injected.returncode == 0, injected.stderr + ws.logs()
            assert ws.kp("leave", "echo").returncode == 0
            [pod] = cluster.wait_pods_ready(namespace, "app=echo", 1)
            name = pod["metadata"]["name"]
            write = f"open('/data/from-pod.txt', 'w').write({FROM_POD!r})"
            cluster.exec_in_pod(namespace, name, ["python3", "-c", write])
            yield Session(ws, namespace, name, manager_namespace)
        finally:
            ws.kp("quit", timeout=60)
            uninstall_manager(cluster, manager_namespace)


def userd_pid(ws: Workstation) -> int:
    pid = ws.userd_pid()
    assert pid is not None, "no userd process for this workstation"
    return pid


def in_userd_mounts(ws: Workstation, *argv: str, timeout: float = 120) -> str:
    """Run a command in userd's mount namespace (where its sshfs mounts live)."""
    result = subprocess.run(
        ["nsenter", "-t", str(userd_pid(ws)), "-m", "--", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr + ws.logs()
    return result.stdout


def mounted(ws: Workstation, point: str) -> bool:
    mountinfo = Path(f"/proc/{userd_pid(ws)}/mountinfo").read_text()
    return any(line.split(" ")[4] == point for line in mountinfo.splitlines())


def sshfs_processes(point: str) -> list[int]:
    return [
        pid
        for pid, argv in command_lines()
        if argv and argv[0].endswith(b"sshfs") and point.encode() in argv
    ]


def in_pod(cluster: Cluster, session: Session, code: str) -> str:
    result = cluster.exec_in_pod(
        session.namespace, session.pod, ["python3", "-c", code], timeout=60
    )
    return result.stdout


def echo_intercepts(ws: Workstation, namespace: str) -> list[dict[str, Any]]:
    listed = ws.kp("list", "-n", namespace, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    workloads = {w["name"]: w for w in json.loads(listed.stdout)["workloads"]}
    return list(workloads["echo"]["intercepts"])


THROUGHPUT = (PROGRAMS / "throughput.py").read_text()


def test_volumes_both_ways_then_leave_unmounts(
    cluster: Cluster, session: Session, tmp_path: Path
) -> None:
    ws = session.ws
    point = f"/tmp/kp-mount-{secrets.token_hex(3)}"  # does not exist yet: made, then removed
    result = ws.kp(
        "intercept", "echo", "--port", "8090:http", "-n", session.namespace,
        "--mount", point, "-o", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + ws.logs()
    created = json.loads(result.stdout)
    assert created["mount_point"] == point, created
    assert created["mount_error"] == ""
    try:
        check_both_ways(cluster, session, point)
    except BaseException:
        ws.kp("leave", "echo")
        raise

    left = ws.kp("leave", "echo")
    assert left.returncode == 0, left.stderr
    assert not mounted(ws, point)
    assert sshfs_processes(point) == []
    assert not Path(point).exists()
    assert echo_intercepts(ws, session.namespace) == []


def check_both_ways(cluster: Cluster, session: Session, point: str) -> None:
    ws = session.ws
    assert mounted(ws, point)
    assert len(sshfs_processes(point)) == 1

    # The app's file, on the workstation; one it writes now too.
    assert in_userd_mounts(ws, "cat", f"{point}/data/from-pod.txt") == FROM_POD
    in_pod(cluster, session, "open('/data/later.txt', 'w').write('later')")
    wait = f"for i in $(seq 50); do [ -f {point}/data/later.txt ] && break; sleep 0.1; done"
    assert in_userd_mounts(ws, "sh", "-c", f"{wait}; cat {point}/data/later.txt") == "later"
    assert "hello from a config map" in in_userd_mounts(ws, "cat", f"{point}/config/greeting")
    # A local file, in the pod.
    in_userd_mounts(ws, "sh", "-c", f"printf %s '{FROM_WS}' > {point}/data/from-ws.txt")
    assert in_pod(cluster, session, "print(open('/data/from-ws.txt').read(), end='')") == FROM_WS
    # Read-only stays read-only.
    refused = subprocess.run(
        ["nsenter", "-t", str(userd_pid(ws)), "-m", "--", "sh", "-c", f"echo x > {point}/config/x"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    # Throughput of a big file, both ways.
    measured = json.loads(
        in_userd_mounts(ws, "python3", "-c", THROUGHPUT, f"{point}/data/big.bin", str(BIG_MIB))
    )
    assert measured["bytes"] == BIG_MIB << 20
    print(f"\nmount throughput, {BIG_MIB} MiB: {json.dumps(measured)}")

    [listed] = echo_intercepts(ws, session.namespace)
    assert listed["mount_point"] == point
    shown: Any = ws.status()["connection"]
    assert any(f"volumes at {point}" in i for i in shown["intercepts"])


def test_command_gets_the_root_and_false_mounts_nothing(cluster: Cluster, session: Session) -> None:
    ws = session.ws
    pid = userd_pid(ws)
    script = (
        'echo "ROOT=$KUBEPRESENCE_ROOT"; '
        f'nsenter -t {pid} -m -- cat "$KUBEPRESENCE_ROOT/data/from-pod.txt"'
    )
    result = ws.kp(
        "intercept",
        "echo",
        "--port",
        "8090:http",
        "-n",
        session.namespace,
        "--",
        "sh",
        "-c",
        script,
    )
    assert result.returncode == 0, result.stderr + ws.logs()
    lines = result.stdout.splitlines()
    root = next(line.removeprefix("ROOT=") for line in lines if line.startswith("ROOT="))
    assert root.startswith("/tmp/kubepresence-echo-"), lines
    assert FROM_POD.strip() in lines
    # The command ended: so did its intercept and its mount.
    assert not mounted(ws, root)
    assert sshfs_processes(root) == []
    assert not Path(root).exists()

    plain = ws.kp(
        "intercept", "echo", "--port", "8090:http", "-n", session.namespace,
        "--mount=false", "-o", "json",
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert ws.kp("leave", "echo").returncode == 0
    assert json.loads(plain.stdout)["mount_point"] == ""
    assert json.loads(plain.stdout)["mount_error"] == ""


def test_a_file_as_mount_point_is_refused(session: Session, tmp_path: Path) -> None:
    ws = session.ws
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    started = time.monotonic()
    result = ws.kp(
        "intercept", "echo", "--port", "8090:http", "-n", session.namespace,
        "--mount", str(target),
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"kubepresence: mount point {target}: exists and is not a directory"
    ], result.stderr
    assert time.monotonic() - started < 30  # refused before any agent work
    assert target.read_text() == "keep me"
    assert echo_intercepts(ws, session.namespace) == []


def test_quit_unmounts(session: Session) -> None:
    """It ends the session's daemons (the next test brings its own)."""
    ws = session.ws
    point = f"/tmp/kp-mount-{secrets.token_hex(3)}"
    result = ws.kp("intercept", "echo", "--port", "8090:http", "-n", session.namespace,
                   "--mount", point)  # fmt: skip
    assert result.returncode == 0, result.stderr + ws.logs()
    assert f"Volumes mounted at {point}" in result.stdout
    assert mounted(ws, point)
    [sshfs] = sshfs_processes(point)
    quit_ = ws.kp("quit", timeout=60)
    assert quit_.returncode == 0, quit_.stderr
    assert not Path(f"/proc/{sshfs}").exists()
    assert f"unmounted {point} (sshfs pid {sshfs} exited" in ws.log("userd")
    assert not Path(point).exists()


def path_without_sshfs(shadow: Path) -> str:
    """A PATH with every program of the usual one except sshfs (symlinks in `shadow`)."""
    shadow.mkdir()
    for directory in kube.kubectl_env(layout.WORKSTATION_KUBECONFIG)["PATH"].split(":"):
        if not Path(directory).is_dir():
            continue
        for entry in os.scandir(directory):
            link = shadow / entry.name
            if entry.name != "sshfs" and not link.exists() and os.access(entry.path, os.X_OK):
                link.symlink_to(entry.path)
    assert not (shadow / "sshfs").exists()
    assert (shadow / "ip").exists()
    return f"{BIN}:{shadow}"


def test_without_sshfs_the_intercept_works_and_says_so_once(
    cluster: Cluster, session: Session, tmp_path: Path
) -> None:
    """After test_quit_unmounts: a second workstation whose PATH has no sshfs. It takes the
    same port at once, so `quit` also proved that departing ends the first one's intercept."""
    ws = Workstation(cluster, tmp_path / "ws")
    ws.env["PATH"] = path_without_sshfs(tmp_path / "bin")
    token = secrets.token_hex(8)
    served = tmp_path / "served"
    served.mkdir()
    (served / "hello.txt").write_text(token)
    server = cluster.start_on_workstation(
        [sys.executable, "-m", "http.server", "8090", "--bind", "127.0.0.1",
         "--directory", str(served)]
    )  # fmt: skip
    try:
        await_listening(cluster, server, 8090, "the workstation file server")
        connected = ws.kp("connect", "--manager-namespace", session.manager_namespace)
        assert connected.returncode == 0, connected.stderr + ws.logs()
        result = ws.kp("intercept", "echo", "--port", "8090:http", "-n", session.namespace)
        assert result.returncode == 0, result.stderr + ws.logs()
        assert result.stderr.strip().splitlines() == [
            "warning: sshfs is not installed: volumes not mounted (install sshfs)"
        ], result.stderr
        assert "Volumes mounted" not in result.stdout
        [listed] = echo_intercepts(ws, session.namespace)
        assert listed["state"] == "active", listed
        assert listed["mount_point"] == "", listed

        client = cluster.client_pod(session.namespace)
        fetch = (
            "import urllib.request, sys; "
            "print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode(), end='')"
        )
        url = f"http://echo.{session.namespace}/hello.txt"
        answer = cluster.exec_in_pod(session.namespace, client, ["python3", "-c", fetch, url])
        assert answer.stdout == token
        assert ws.kp("leave", "echo").returncode == 0
    finally:
        ws.kp("quit", timeout=60)
        server.terminate()
        server.wait(10)
