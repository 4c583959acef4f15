"""What several e2e tests share around intercepts: a server on the workstation that
answers with a known body, awaited until it accepts, and a GET from a cluster pod.

The programs are real files under programs/ (linted and type-checked with the tests).
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kpcluster.harness import Cluster
from kptest.accepting import await_accepting

PROGRAMS = Path(__file__).resolve().parent / "programs"
HTTP_GET = (PROGRAMS / "http_get.py").read_text()
START_TIMEOUT = 30.0


@contextlib.contextmanager
def answering_server(cluster: Cluster, port: int, body: str) -> Iterator[subprocess.Popen[str]]:
    """A workstation HTTP server on 127.0.0.1:port answering `body` ("{path}" filled in);
    yields once it accepts connections, stops it (by its handle) afterwards."""
    process = cluster.start_on_workstation(
        [sys.executable, str(PROGRAMS / "answering_server.py"), str(port), body]
    )
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
        ready = process.stdout.readline().strip() if readable else "(nothing in time)"
        assert ready == "listening", f"the workstation server on {port} did not start: {ready}"
        yield process
    finally:
        process.terminate()
        process.wait(10)


def first_line(process: subprocess.Popen[str], timeout: float = START_TIMEOUT) -> str:
    """The first line `process` prints (stripped), waited for at most `timeout` seconds:
    what a server that says when it is ready prints; "(nothing in time)" without it."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if readable else "(nothing in time)"


def await_listening(
    cluster: Cluster, server: subprocess.Popen[str], port: int, what: str, host: str = "127.0.0.1"
) -> None:
    """Return once `server`, started on the workstation, accepts a connection on host:port
    there (tried from the workstation namespace); fail at once with its output if it exits
    first, or after START_TIMEOUT."""
    probe = [sys.executable, str(PROGRAMS / "connect_once.py"), host, str(port)]

    def connects() -> bool:
        return cluster.on_workstation(probe, timeout=10, check=False).returncode == 0

    await_accepting(server, connects, what, timeout=START_TIMEOUT)


def get_from_pod(
    cluster: Cluster,
    namespace: str,
    pod: str,
    url: str,
    headers: dict[str, str] | None = None,
    timeout: float = 20,
    retry_refused: float = 0,
) -> dict[str, Any]:
    """One GET from a cluster pod: {"status", "body"}, or {"error"} without an answer.
    With `retry_refused`, a refused connection is tried again for that many seconds (see
    programs/http_get.py) and "attempts" says how many tries it took."""
    argv = [url, json.dumps(headers or {}), str(timeout), str(retry_refused)]
    result = cluster.exec_in_pod(
        namespace, pod, ["python3", "-c", HTTP_GET, *argv], timeout=timeout + retry_refused + 40
    )
    answer = dict(json.loads(result.stdout))
    attempts = answer.pop("attempts", 1)
    if retry_refused:
        answer["attempts"] = attempts
    return answer
