"""Waiting for a server we started until it accepts connections, instead of sleeping.

`await_accepting` tries to connect until one attempt succeeds; if the server's process
exits meanwhile it fails at once with what the process printed, so a server that could
not start (port taken, bad argument) is named instead of timing out the test later.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

from kptest.waiting import NotInTimeError

DEFAULT_TIMEOUT = 30.0


def connects(host: str, port: int, timeout: float = 1.0) -> bool:
    """One TCP connection attempt from this process: True when it was accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def await_accepting(
    server: subprocess.Popen[str],
    connect: Callable[[], bool],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
) -> None:
    """Return once `connect()` succeeds; fail when `server` exits first or after `timeout`.

    `connect` makes one attempt (from this process, or from the namespace the server runs
    in) and says whether it was accepted."""
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            output, _ = server.communicate()
            raise AssertionError(
                f"{what} exited with {server.returncode} before accepting: {output!r}"
            )
        if connect():
            return
        if time.monotonic() > deadline:
            raise NotInTimeError(f"{what} did not accept connections in {timeout} s")
        time.sleep(interval)
