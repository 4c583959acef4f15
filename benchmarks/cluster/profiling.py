"""Profile mode: py-spy samples userd and rootd while bytes move, and the top entries
(by own time, and by total time) go into the results."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
RATE = 250  # samples per second
LONGEST = 300  # seconds: py-spy stops by itself if nobody stops it


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


@contextmanager
def recording(pids: dict[str, int | None], out_dir: Path) -> Iterator[dict[str, Any]]:
    """Record each process (role → pid) until the block ends; fill in the top entries."""
    found: dict[str, Any] = {}
    binary = py_spy()
    if binary is None:
        found["error"] = "py-spy is not installed"
        yield found
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    recorders: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    for role, pid in pids.items():
        if pid is None:
            continue
        raw = out_dir / f"{role}.collapsed.txt"
        # --gil: only samples that hold the GIL, i.e. CPU spent in Python or in C called
        # from it; a thread waiting (epoll, a pool worker's queue) is not counted.
        argv = [binary, "record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking", "--gil"]
        argv += ["--duration", str(LONGEST), "--format", "raw", "--output", str(raw)]
        recorders[role] = (
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            raw,
        )
    try:
        yield found
    finally:
        for role, (process, raw) in recorders.items():
            process.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
            try:
                output, _ = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate(timeout=10)
            if raw.exists():
                found[role] = top_entries(raw.read_text())
            else:
                found[role] = {"error": output.strip()[-500:]}
            log.info("profile of %s: %s", role, found[role])


def top_entries(collapsed: str, count: int = 12) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the functions with most own and most total time."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        n = int(number)
        samples += n
        frames = stack.split(";")
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            total[frame] += n

    # The trunk every sample passes through (main, the event loop's run…) says nothing.
    trunk = {name for name, n in total.items() if n >= 0.9 * samples}

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "percent": round(100 * n / samples, 1)}
            for name, n in counter.most_common(count + len(trunk))
            if counter is own or name not in trunk
        ][:count]

    return {"samples": samples, "own": share(own), "total": share(total)}


def _short(frame: str) -> str:
    """`fn (/long/path/site-packages/pkg/mod.py:12)` → `fn (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "/src/", "lib/python3.11/"):
        if marker in where:
            where = where.rpartition(marker)[2]
            break
    return f"{name} ({where})" if where else name
