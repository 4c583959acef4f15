"""What every test directory of the unit session shares: the leaked-task check.

An async test that leaves a task pending on its loop fails at teardown, naming the task
(tests/support/kptest/leaks.py). The e2e and teardown suites drive processes, not loops,
and are left out.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kptest.leaks import no_leaked_tasks

ROOT = Path(__file__).resolve().parent
WITHOUT_CHECK = (ROOT / "tests" / "e2e", ROOT / "tests" / "teardown")


@pytest.fixture
async def _leaked_task_check() -> AsyncIterator[None]:
    async with no_leaked_tasks():
        yield


@pytest.fixture(autouse=True)
def _no_leaked_tasks(request: pytest.FixtureRequest) -> None:
    """Every async test, on its own loop, through `_leaked_task_check`: requested only for
    coroutine tests so that sync tests get no event loop. Requested first (autouse), it is
    torn down after the test's other fixtures, so what they close is not a leak."""
    path = Path(str(request.node.path)).resolve()
    if any(path.is_relative_to(skipped) for skipped in WITHOUT_CHECK):
        return
    if inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        request.getfixturevalue("_leaked_task_check")
