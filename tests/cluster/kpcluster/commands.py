"""Running host commands with a deadline, and bounded polling.

Every external command and every wait in this package goes through here, so none can hang
forever (the machine's shell gives up after ten minutes, CI after ninety).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from . import programs

log = logging.getLogger(__name__)

T = TypeVar("T")


class ClusterError(RuntimeError):
    """Something in bring-up, teardown or a cluster query failed; the message says what."""


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float = 120,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output as text, fail with its stderr if check is set."""
    args = [str(a) for a in argv]
    if not programs.is_known(args[0]):
        raise ClusterError(
            f"internal: {args[0]} is not in kpcluster/programs.py, so nothing installs it"
        )
    log.debug("run: %s", " ".join(args))
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            input=input_text,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        package = programs.package_of(args[0])
        hint = f" (Debian package {package}: `cluster.py prepare` installs it)" if package else ""
        raise ClusterError(f"{args[0]} not found{hint}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(
            f"{args[0]} did not finish within {timeout:.0f} s: {' '.join(args)}"
        ) from exc
    if check and proc.returncode != 0:
        raise ClusterError(
            f"{' '.join(args)} exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return proc


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.5,
) -> T:
    """Call probe until it returns something other than None or False; bounded in time and count."""
    deadline = time.monotonic() + timeout
    attempts = max(1, int(timeout / interval) + 1)
    last_error: Exception | None = None
    for _ in range(attempts):
        try:
            result = probe()
        except (ClusterError, OSError) as exc:
            last_error = exc
            result = None
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
