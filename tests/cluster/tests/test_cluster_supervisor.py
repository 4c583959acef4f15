"""Unit tests of the supervisor: pid files carry identity, stop kills only our process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kpcluster import supervisor


def test_start_stop_by_pid_file(tmp_path: Path) -> None:
    proc = supervisor.start(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        pids=tmp_path / "pids",
        logs=tmp_path / "logs",
    )
    read = supervisor.read_pid_file(tmp_path / "pids" / "sleeper.pid")
    assert read == proc
    assert supervisor.is_alive(proc)
    assert supervisor.tracked(tmp_path / "pids") == {"sleeper": proc}
    supervisor.stop(proc, "sleeper", timeout=5)
    assert not supervisor.is_alive(proc)
    assert (tmp_path / "logs" / "sleeper.log").read_text().count("start sleeper") == 1


def test_a_reused_pid_is_not_ours() -> None:
    me = supervisor.Tracked(os.getpid(), (supervisor.process_start_time(os.getpid()) or 0) + 1)
    assert not supervisor.is_alive(me)
    supervisor.kill(me)  # must be a no-op: the start time does not match
    assert supervisor.process_start_time(os.getpid()) is not None
