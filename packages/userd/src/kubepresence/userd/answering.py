"""Taking the inbound connections of our intercepts: the workstation end of a dial.

A dial is posted on a WatchDials stream for every connection an agent hands over: by
the manager (an agent that has no watch of ours), or by the agent itself, over our
port-forward to its pod (`direct`). We answer each with an AnswerDial tunnel to whoever
posted it (`DialSource.answer_dial`). We connect
to the intercept's local address; if nothing listens we answer DIAL_FAILED at once (the
caller in the cluster is refused fast, it does not hang); otherwise we answer CONNECTED
and relay bytes until both sides are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from kubepresence.protocol.backoff import Backoff
from kubepresence.protocol.errors import KubepresenceError
from kubepresence.protocol.tunnel import (
    describe,
    relay,
    send_connected,
    send_dial_failed,
    send_reset,
)
from kubepresence.userd.rpc.manager import Dial

log = logging.getLogger(__name__)

LOCAL_DIAL_TIMEOUT = 3.0
FLOW_IDLE_TIMEOUT = 600.0
# A broken dial watch is watched again after 0.5 s, then doubling up to 15 s.
FIRST_RETRY = 0.5
MAX_BACKOFF = 15.0


class DialSource(Protocol):
    """Who posts dials and takes their answers: the manager or one agent."""

    def watch_dials(self, session_id: str) -> AsyncIterator[Dial]: ...
    def answer_dial(
        self, session_id: str, dial_id: str
    ) -> contextlib.AbstractAsyncContextManager[Any]: ...


async def answer_dials(
    manager: DialSource,
    session: Callable[[], str],
    pause: Callable[[float, str], Awaitable[None]] | None = None,
    on_trouble: Callable[[str], None] = lambda problem: None,
) -> None:
    """Serve dials until cancelled, re-watching (with backoff) when the stream breaks.

    `pause(seconds, watched_session)` waits before the next watch; it may end early when
    the session arrived again (ClusterConnection.pause). `on_trouble` hears why a watch
    broke."""
    wait = pause or (lambda seconds, _: asyncio.sleep(seconds))
    backoff = Backoff(first=FIRST_RETRY, limit=MAX_BACKOFF)
    async with asyncio.TaskGroup() as group:
        while True:
            watched = session()
            try:
                async for dial in manager.watch_dials(watched):
                    backoff.succeeded()
                    if dial.dial_id:
                        group.create_task(_answer(manager, session(), dial), name="dial")
            except KubepresenceError as error:
                log.info(
                    "dial watch interrupted (%s); watching again in %.1f s",
                    error,
                    backoff.next_delay,
                )
                on_trouble(error.message)
            await wait(backoff.failed()[0], watched)
            # Sooner when the session arrived again (a restarted manager): dials wait for us.
            if session() != watched:
                backoff.succeeded()


async def _answer(manager: DialSource, session_id: str, dial: Dial) -> None:
    target = f"{dial.local_host}:{dial.local_port}"
    try:
        async with asyncio.timeout(LOCAL_DIAL_TIMEOUT):
            reader, writer = await asyncio.open_connection(dial.local_host, dial.local_port)
    except (OSError, TimeoutError) as error:
        log.info("intercepted connection refused locally: nothing answers at %s", target)
        try:
            async with manager.answer_dial(session_id, dial.dial_id) as stream:
                await send_dial_failed(stream, describe(error))
                await stream.end()
        except (KubepresenceError, OSError) as failure:
            log.debug("could not report the failed dial: %s", describe(failure))
        return
    try:
        async with manager.answer_dial(session_id, dial.dial_id) as stream:
            await send_connected(stream)
            try:
                await relay(stream, reader, writer, idle_timeout=FLOW_IDLE_TIMEOUT)
            except Exception as error:  # noqa: BLE001 - one connection's end, not ours
                log.info("intercepted connection to %s ended: %s", target, describe(error))
                await send_reset(stream, describe(error))
            else:
                await stream.end()
    except (KubepresenceError, OSError) as error:
        log.info("intercepted connection to %s lost: %s", target, describe(error))
    finally:
        writer.close()
