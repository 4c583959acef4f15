"""Bounded waits on a condition: what a test does instead of sleeping and then asserting.

`eventually` (async) and `wait_for` (blocking) poll a predicate until it holds and fail
with the caller's description when it does not within the timeout. They only wait: the
assertion after them still says what must be true, and a predicate that never holds
fails the test instead of passing by luck of timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_INTERVAL = 0.005
DEFAULT_TIMEOUT = 5.0


class NotInTimeError(AssertionError):
    """The condition did not hold within the timeout (a test failure, not an error)."""


async def eventually(
    predicate: Callable[[], object], what: str = "", *, within: float = DEFAULT_TIMEOUT
) -> None:
    """Return as soon as `predicate()` is true; fail after `within` seconds.

    The predicate is tried at once, then after every turn of the event loop and short
    pause, so the code under test runs between tries."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise NotInTimeError(f"not in {within} s: {what or predicate}")
        await asyncio.sleep(POLL_INTERVAL)


def wait_for(
    predicate: Callable[[], object],
    what: str = "",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
) -> None:
    """Blocking `eventually`, for threads and subprocesses (the e2e tests)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise NotInTimeError(f"not in {timeout} s: {what or predicate}")
        time.sleep(interval)
