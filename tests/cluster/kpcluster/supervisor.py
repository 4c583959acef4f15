"""Starting and stopping the cluster's host processes, tracked by pid files.

Each component runs in its own session (setsid) with its output in LOGS/<name>.log. A pid
file holds the pid and the process's start time (field 22 of /proc/<pid>/stat), so a pid the
kernel reused for some other program is never signalled. Nothing is ever found or killed by
name. There is no restart loop (no systemd here): a component that dies stays down, and
`status` and the bring-up waits report it (notes R10).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tracked:
    """A process we started: its pid and the start time that identifies it."""

    pid: int
    start_time: int


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot, or None if the process is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(proc: Tracked) -> bool:
    return process_start_time(proc.pid) == proc.start_time


def pid_file(name: str, pids: Path = layout.PIDS) -> Path:
    return pids / f"{name}.pid"


def read_pid_file(path: Path) -> Tracked | None:
    try:
        words = path.read_text().split()
    except FileNotFoundError:
        return None
    if not words:
        return None
    pid = int(words[0])
    if len(words) > 1:
        return Tracked(pid, int(words[1]))
    # containerd's init.pid files hold only a pid: identify the process by its current start time.
    start = process_start_time(pid)
    return Tracked(pid, start) if start is not None else None


def tracked(pids: Path = layout.PIDS) -> dict[str, Tracked]:
    """Every component with a pid file, alive or not."""
    result = {}
    if pids.is_dir():
        for path in sorted(pids.glob("*.pid")):
            proc = read_pid_file(path)
            if proc is not None:
                result[path.stem] = proc
    return result


def start(
    name: str,
    argv: Sequence[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    pids: Path = layout.PIDS,
    logs: Path = layout.LOGS,
) -> Tracked:
    """Start a component in its own session, output appended to its log file."""
    pids.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with log_path.open("ab") as out:
        out.write(
            f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} start {name}\n".encode()
        )
        out.flush()
        child = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            close_fds=True,
        )
    started = None
    for _ in range(100):  # /proc/<pid>/stat appears at fork; bounded anyway
        started = process_start_time(child.pid)
        if started is not None:
            break
        time.sleep(0.01)
    if started is None:
        raise RuntimeError(f"{name} exited at once (exit code {child.poll()}); see {log_path}")
    proc = Tracked(child.pid, started)
    pid_file(name, pids).write_text(f"{proc.pid} {proc.start_time}\n")
    log.info("started %s (pid %d)", name, proc.pid)
    return proc


def stop(proc: Tracked, name: str, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to timeout, then SIGKILL; only if the pid still is our process."""
    if not is_alive(proc):
        return
    _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(proc):
            log.info("stopped %s (pid %d)", name, proc.pid)
            return
        time.sleep(0.1)
    log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing", name, proc.pid, timeout)
    _signal(proc, signal.SIGKILL)
    for _ in range(50):
        if not is_alive(proc):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} (pid {proc.pid}) survived SIGKILL")


def kill(proc: Tracked) -> None:
    """SIGKILL at once (leftover shims and container processes)."""
    _signal(proc, signal.SIGKILL)


def _signal(proc: Tracked, sig: int) -> None:
    # Re-check identity right before signalling: the window for pid reuse is now tiny.
    if process_start_time(proc.pid) != proc.start_time:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    # Reap it if it is our own child (same CLI invocation started it), or it lingers as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)
