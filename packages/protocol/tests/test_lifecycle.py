"""The supervisor: stop on request or signal, bounded shutdown, failures surface."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from kubepresence.protocol.lifecycle import Supervisor, supervise


async def test_request_stop_ends_main_and_cancels_spawned_tasks() -> None:
    cancelled = asyncio.Event()
    order: list[str] = []

    async def worker() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main(sup: Supervisor) -> None:
        sup.spawn(worker(), name="worker")
        await asyncio.sleep(0)
        sup.request_stop("test")
        await sup.stopping.wait()
        order.append("main finished")

    await asyncio.wait_for(supervise(main, handle_signals=False), 5)
    assert order == ["main finished"]
    assert cancelled.is_set()


async def test_main_that_ignores_stop_is_cancelled_after_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stubborn(sup: Supervisor) -> None:
        sup.spawn(asyncio.sleep(3600), name="stuck-worker")
        sup.request_stop("test")
        await asyncio.sleep(3600)

    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(supervise(stubborn, grace=0.2, handle_signals=False), 5)
    assert loop.time() - started < 2
    assert "stuck-worker" in caplog.text


async def test_sigterm_requests_a_graceful_stop() -> None:
    reasons: list[str] = []

    async def main(sup: Supervisor) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await sup.stopping.wait()
        reasons.append(sup.stop_reason)

    await asyncio.wait_for(supervise(main), 5)
    assert reasons == ["received SIGTERM"]


async def test_a_failing_task_takes_the_group_down() -> None:
    async def broken() -> None:
        raise RuntimeError("broken part")

    async def main(sup: Supervisor) -> None:
        sup.spawn(broken(), name="broken")
        await sup.stopping.wait()

    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(supervise(main, handle_signals=False), 5)
    assert caught.group_contains(RuntimeError, match="broken part")


async def test_main_returning_stops_everything() -> None:
    async def main(sup: Supervisor) -> None:
        sup.spawn(asyncio.sleep(3600), name="orphan")

    await asyncio.wait_for(supervise(main, handle_signals=False), 5)
