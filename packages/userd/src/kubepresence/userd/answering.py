"""Taking the inbound connections of our intercepts: the workstation end of a dial.

The manager posts a dial on our WatchDials stream for every connection an agent hands
over; we answer each with an AnswerDial tunnel (`ManagerClient.answer_dial`). We connect
to the intercept's local address; if nothing listens we answer DIAL_FAILED at once (the
caller in the cluster is refused fast, it does not hang); otherwise we answer CONNECTED
and relay bytes until both sides are done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kubepresence.protocol.backoff import Backoff
from kubepresence.protocol.errors import KubepresenceError
from kubepresence.protocol.tunnel import (
    describe,
    relay,
    send_connected,
    send_dial_failed,
    send_reset,
)
from kubepresence.userd.rpc.manager import Dial, ManagerClient

log = logging.getLogger(__name__)

LOCAL_DIAL_TIMEOUT = 3.0
FLOW_IDLE_TIMEOUT = 600.0
# A broken dial watch is watched again after 0.5 s, then doubling up to 15 s.
FIRST_RETRY = 0.5
MAX_BACKOFF = 15.0


async def answer_dials(
    manager: ManagerClient,
    session: Callable[[], str],
    pause: Callable[[float, str], Awaitable[None]] | None = None,
) -> None:
    """Serve dials until cancelled, re-watching (with backoff) when the stream breaks.

    `pause(seconds, watched_session)` waits before the next watch; it may end early when
    the session arrived again (ClusterConnection.pause)."""
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
            await wait(backoff.failed()[0], watched)
            # Sooner when the session arrived again (a restarted manager): dials wait for us.
            if session() != watched:
                backoff.succeeded()


async def _answer(manager: ManagerClient, session_id: str, dial: Dial) -> None:
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
