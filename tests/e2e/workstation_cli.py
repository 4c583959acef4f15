"""Driving kubepresence on the workstation namespace, for end-to-end tests.

`Workstation` runs the real CLI inside the `ws1` network namespace with private XDG
directories (so each test has its own daemons and logs); `uninstall_manager` removes a
test's own traffic manager with the user daemon's real uninstall code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kpcluster import kube, layout
from kpcluster.harness import Cluster

# userd's own uninstall, as the cluster admin (a real file: linted and type-checked).
UNINSTALL = Path(__file__).resolve().parent / "programs" / "uninstall_manager.py"

BIN = Path(sys.executable).parent
WS_RESOLV_CONF = Path("/etc/netns") / layout.WORKSTATION_NETNS / "resolv.conf"

# ws1 has one resolv.conf and room for one VIF: one kubepresence session at a time, across
# test processes (and the benchmarks). Re-entrant within a process.
WS1_VIF_LOCK = Path("/run/lock/kubepresence-ws1-vif.lock")
LOCK_WAIT = 900.0
_held = 0


@contextlib.contextmanager
def ws1_vif_lock(wait: float = LOCK_WAIT) -> Iterator[None]:
    """Exclusive use of ws1's VIF and resolv.conf (bounded wait: TimeoutError)."""
    global _held
    if _held:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    WS1_VIF_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with WS1_VIF_LOCK.open("a") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{WS1_VIF_LOCK} still held after {wait:.0f} s") from None
                time.sleep(1)
        _held = 1
        try:
            yield
        finally:
            _held = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


class Workstation:
    """The kubepresence CLI run on the workstation namespace, with private user dirs."""

    def __init__(self, cluster: Cluster, home: Path) -> None:
        self.cluster = cluster
        self.home = home
        self.env = {
            "XDG_RUNTIME_DIR": str(home / "run"),
            "XDG_STATE_HOME": str(home / "state"),
            "KUBECONFIG": str(layout.WORKSTATION_KUBECONFIG),
            "PATH": f"{BIN}:{kube.kubectl_env(layout.WORKSTATION_KUBECONFIG)['PATH']}",
            "HOME": str(home),
        }

    def kp_argv(self, *args: str) -> list[str]:
        """The CLI's command line with this workstation's environment (for a Popen)."""
        return ["env", *(f"{k}={v}" for k, v in self.env.items()), str(BIN / "kubepresence"), *args]

    def kp(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return self.cluster.on_workstation(self.kp_argv(*args), timeout=timeout, check=False)

    def status(self) -> dict[str, object]:
        result = self.kp("status", "-o", "json")
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def log(self, name: str) -> str:
        path = self.home / "state" / "kubepresence" / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.cluster.on_workstation(list(argv), timeout=timeout, check=False)

    def python(self, code: str, *args: str, timeout: float = 300) -> Any:
        result = self.run(sys.executable, "-c", code, *args, timeout=timeout)
        assert result.returncode == 0, result.stderr + self.logs()
        return json.loads(result.stdout)

    def logs(self) -> str:
        parts = []
        for name in ("userd", "rootd"):
            path = self.home / "state" / "kubepresence" / f"{name}.log"
            if path.exists():
                parts.append(
                    f"--- {name}.log (tail)\n" + "\n".join(path.read_text().splitlines()[-40:])
                )
        return "\n".join(parts)

    def rootd_pid(self) -> int | None:
        return self._daemon_pid("rootd")

    def userd_pid(self) -> int | None:
        return self._daemon_pid("userd")

    def _daemon_pid(self, name: str) -> int | None:
        socket = str(self.home / "run" / "kubepresence" / f"{name}.socket").encode()
        for pid, argv in command_lines():
            if any(f"kubepresence-{name}".encode() in a for a in argv) and socket in argv:
                return pid
        return None

    def rootd_memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak) of rootd, in KiB."""
        pid = self.rootd_pid()
        assert pid is not None, "no rootd process for this workstation"
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields


@dataclass(frozen=True)
class MachineState:
    """What a session changes on the workstation namespace: all of it is undone after."""

    resolv_conf: bytes
    links: tuple[str, ...]
    routes: tuple[str, ...]
    rules: tuple[str, ...]


def machine_state(cluster: Cluster) -> MachineState:
    def lines(*argv: str) -> tuple[str, ...]:
        return tuple(cluster.on_workstation(list(argv)).stdout.splitlines())

    links = tuple(
        line.split(":")[1].strip() for line in lines("ip", "-o", "link", "show") if ":" in line
    )
    routes = lines("ip", "route", "show", "table", "all") + lines(
        "ip", "-6", "route", "show", "table", "all"
    )
    return MachineState(
        WS_RESOLV_CONF.read_bytes(), links, routes, lines("ip", "rule") + lines("ip", "-6", "rule")
    )


@dataclass
class Session:
    """A workstation connected for a whole test module (the `session` fixture)."""

    ws: Workstation
    manager_namespace: str


def command_lines() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every process that is still there when its turn comes."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        yield int(proc.name), argv


def host_pids(marker: bytes, needle: bytes) -> list[int]:
    """PIDs whose command line contains `marker` and whose environment contains `needle`
    (the processes of cluster containers run on this single node)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes() and needle in (
                entry / "environ"
            ).read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def agent_pid(pod: str) -> int:
    pids = host_pids(b"kubepresence.agent", f"KP_AGENT_POD_NAME={pod}".encode())
    assert len(pids) == 1, f"agent processes of {pod}: {pids}"
    return pids[0]


def manager_pid(ns: str) -> int:
    pids = host_pids(b"kubepresence.manager", f"MANAGER_NAMESPACE={ns}".encode())
    assert len(pids) == 1, f"manager processes of {ns}: {pids}"
    return pids[0]


MANAGER_SELECTOR = "app.kubernetes.io/name=kubepresence-manager"


def delete_manager_pods(cluster: Cluster, namespace: str, *, wait: bool = True) -> None:
    """Delete the traffic manager's pod (its Deployment starts another)."""
    cluster.kubectl(
        "delete",
        "pod",
        "-n",
        namespace,
        "-l",
        MANAGER_SELECTOR,
        *(() if wait else ("--wait=false",)),
    )


def uninstall_manager(cluster: Cluster, namespace: str) -> None:
    """Remove a test's traffic manager (cluster-scoped objects too) and its namespace."""
    uninstall = [str(UNINSTALL), str(layout.ADMIN_KUBECONFIG), namespace]
    subprocess.run([sys.executable, *uninstall], check=False, timeout=180)
    cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")


def token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """The workstation's kubeconfig with a ServiceAccount's token as its credentials."""
    token = cluster.kubectl("create", "token", account, "-n", namespace).strip()
    config = yaml.safe_load(layout.WORKSTATION_KUBECONFIG.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path
