"""RSS and CPU time of kubepresence's processes while the suite moves bytes.

userd and rootd are found by their socket in the Workstation's private run dir; the
manager and agent containers by crictl (the node is this machine, so /proc has the
container's processes). A sampler thread records the peak RSS of each process tree.

`machine_cpu` counts the CPU time of every process on the machine by program name (the
API server, the kubelet, containerd, kubectl, the daemons, the test client and server),
which shows what each path costs the machine as a whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kpcluster import layout
from workstation_cli import Workstation, command_lines

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def userd_pid(ws: Workstation) -> int | None:
    """The user daemon of this Workstation (its socket is on its command line)."""
    socket = str(ws.home / "run" / "kubepresence" / "userd.socket").encode()
    for pid, argv in command_lines():
        if any(b"kubepresence-userd" in a for a in argv) and socket in argv:
            return pid
    return None


def crictl(*args: str) -> str:
    argv = [
        str(layout.binary("crictl")),
        "--config",
        str(layout.CONFIG / "crictl.yaml"),
        "--runtime-endpoint",
        f"unix://{layout.CONTAINERD_SOCK}",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def container_pid(namespace: str, container: str, pod_prefix: str = "") -> int | None:
    """The host PID of a running container's first process, found through the CRI."""
    listed = json.loads(
        crictl("ps", "--label", f"io.kubernetes.pod.namespace={namespace}", "-o", "json")
    )
    for item in listed["containers"]:
        labels = item.get("labels", {})
        if item["metadata"]["name"] != container:
            continue
        if not labels.get("io.kubernetes.pod.name", "").startswith(pod_prefix):
            continue
        info = json.loads(crictl("inspect", item["id"]))
        return int(info["info"]["pid"])
    return None


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, user+system ticks) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _tree(root: int) -> list[int]:
    """root and its descendants."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and (stat := _stat(int(proc.name))) is not None:
            children.setdefault(stat[0], []).append(int(proc.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


def _cpu_ticks(pids: list[int]) -> int:
    return sum(stat[1] for pid in pids if (stat := _stat(pid)) is not None)


@dataclass
class Usage:
    """Per role: peak RSS (MiB) and CPU seconds while the sampler ran."""

    rss_peak_mib: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)


@contextmanager
def sampled(pids: dict[str, int | None], interval: float = 0.1) -> Iterator[Usage]:
    """Sample the process trees of `pids` (role → pid) until the block ends."""
    trees = {role: _tree(pid) for role, pid in pids.items() if pid is not None}
    usage = Usage()
    peaks = {role: _rss(tree) for role, tree in trees.items()}
    cpu_before = {role: _cpu_ticks(tree) for role, tree in trees.items()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            for role, tree in trees.items():
                peaks[role] = max(peaks[role], _rss(tree))

    thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield usage
    finally:
        stop.set()
        thread.join(5)
        for role, tree in trees.items():
            usage.rss_peak_mib[role] = round(peaks[role] / (1 << 20), 1)
            usage.cpu_seconds[role] = round((_cpu_ticks(tree) - cpu_before[role]) / TICKS, 2)


def _programs() -> dict[int, tuple[str, int]]:
    """pid -> (program name, user+system ticks) of every process now."""
    found: dict[int, tuple[str, int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            text = (proc / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rpartition(")")[2].split()
        found[int(proc.name)] = (name, int(fields[11]) + int(fields[12]))
    return found


@contextmanager
def machine_cpu() -> Iterator[dict[str, float]]:
    """CPU seconds by program name while the block runs, every process on the machine.

    Processes that started and ended inside the block count when they were this
    process's children (the benchmark's clients); others that came and went are missed.
    """
    seconds: dict[str, float] = {}
    before = _programs()
    children_before = os.times()
    try:
        yield seconds
    finally:
        children = os.times()
        for pid, (name, ticks) in _programs().items():
            earlier = before.get(pid)
            used = ticks - (earlier[1] if earlier is not None and earlier[0] == name else 0)
            if used > 0:
                seconds[name] = seconds.get(name, 0.0) + used / TICKS
        reaped = (children.children_user - children_before.children_user) + (
            children.children_system - children_before.children_system
        )
        if reaped > 0:
            seconds["(benchmark clients)"] = reaped
