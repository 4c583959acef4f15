"""The shared test support can fail: a condition that never holds, a server that never
accepts or dies, a task left pending."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest
from kptest.accepting import await_accepting, connects
from kptest.leaks import no_leaked_tasks
from kptest.waiting import NotInTimeError, eventually, wait_for


async def test_eventually_returns_once_the_condition_holds_and_fails_when_it_never_does() -> None:
    loop = asyncio.get_running_loop()
    ready_at = loop.time() + 0.05
    await eventually(lambda: loop.time() > ready_at, "a moment passed")
    with pytest.raises(NotInTimeError, match="never true"):
        await eventually(lambda: False, "never true", within=0.05)


def test_wait_for_fails_when_the_condition_never_holds() -> None:
    wait_for(lambda: True, "at once")
    with pytest.raises(NotInTimeError, match="never true"):
        wait_for(lambda: False, "never true", timeout=0.05, interval=0.01)


async def test_a_leaked_task_is_named_and_cancelled() -> None:
    with pytest.raises(AssertionError, match="left-behind"):
        async with no_leaked_tasks():
            leaked = asyncio.create_task(asyncio.sleep(3600), name="left-behind")
    assert leaked.cancelled()


async def test_a_task_cancelled_at_the_end_is_no_leak() -> None:
    async with no_leaked_tasks():
        task = asyncio.create_task(asyncio.sleep(3600))
        task.cancel()


def test_a_server_that_accepts_is_awaited_and_one_that_dies_fails_with_its_output() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], text=True)
        try:
            await_accepting(server, lambda: connects("127.0.0.1", port), "the listener")
        finally:
            server.kill()
            server.wait()
    dying = subprocess.Popen(
        [sys.executable, "-c", "print('port taken'); raise SystemExit(3)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    with pytest.raises(AssertionError, match="port taken"):
        await_accepting(dying, lambda: False, "the dying server")
