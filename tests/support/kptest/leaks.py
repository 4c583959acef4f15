"""The leaked-task check: an async test fails when it leaves a task pending on its loop.

A task still pending after the test and its fixtures ended was started and never awaited
or cancelled: a fire-and-forget `create_task`, a server not closed, a supervisor whose
children outlived it. The check names each such task and cancels it so that the next test
starts clean. The root conftest.py applies it to every async test outside the e2e suite.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

# How long tasks that were cancelled (or finish) at teardown get to end: a task cancelled
# by a fixture's teardown needs a turn of the loop or two to see its CancelledError, one
# whose transport closes a few I/O callbacks. The check stops waiting once none is left.
SETTLE_SECONDS = 0.5


def _pending() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if not task.done()}


def describe(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    where = getattr(coro, "__qualname__", repr(coro))
    return f"{task.get_name()} ({where})"


@contextlib.asynccontextmanager
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Around a test on the running loop: fail if tasks started inside remain pending."""
    before = _pending()
    yield
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_SECONDS
    while leaked := _pending() - before - {asyncio.current_task()}:
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.001)
    if not leaked:
        return
    for task in leaked:
        task.cancel()
    await asyncio.gather(*leaked, return_exceptions=True)
    names = ", ".join(sorted(describe(task) for task in leaked))
    raise AssertionError(f"the test left tasks pending on its loop: {names}")
