"""The agent's session with the traffic manager: arrive, remain, arrive again, depart.

The manager may be away (restarting, scaled to 0, not installed any more): the session
task then retries with a capped backoff, forever, while the forwarder keeps passing the
app's traffic. Every call has a deadline.
"""

from __future__ import annotations

import asyncio
import logging

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from kubepresence.agent.core.config import AgentConfig
from kubepresence.protocol import version_of, wire
from kubepresence.protocol.backoff import Backoff
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.logs import set_level_for
from kubepresence.protocol.transport import tcp_channel
from kubepresence.protocol.tunnel import describe

log = logging.getLogger(__name__)

CALL_TIMEOUT = 5.0
REMAIN_INTERVAL = 5.0
# The wait before the next attempt to reach the manager: doubling, capped. The cap bounds
# how long an agent stays away after the manager returns; one dial per agent every 10 s
# costs the cluster nothing.
RETRY_FIRST = 1.0
RETRY_LIMIT = 10.0


def agent_info(config: AgentConfig) -> common.AgentInfo:
    return wire.agent_to_message(config.description(version_of("kubepresence-agent")))


class ManagerSession:
    def __init__(self, config: AgentConfig, host: str, port: int) -> None:
        self.config = config
        self.host, self.port = host, port
        self.session_id: str | None = None
        self.arrivals = 0
        self._channel = tcp_channel(host, port)
        self._stub = manager.ManagerStub(self._channel, timeout=CALL_TIMEOUT)
        self.arrived = asyncio.Event()  # set while the agent has a session
        self._changed = asyncio.Event()  # set (and replaced) whenever session_id changes

    @property
    def channel(self) -> Channel:
        return self._channel

    def _session_is(self, session_id: str | None) -> None:
        if session_id != self.session_id:
            self.session_id = session_id
            self._changed.set()
            self._changed = asyncio.Event()

    async def replaced(self, session_id: str) -> None:
        """Return once the agent's session is no longer `session_id` (lost, or arrived
        again as another): what was watched for it is stale."""
        while self.session_id == session_id:
            await self._changed.wait()

    async def run(self) -> None:
        """Arrive and keep the session until cancelled; arrive again whenever it is lost."""
        backoff = Backoff(first=RETRY_FIRST, limit=RETRY_LIMIT)
        while True:
            try:
                if self.session_id is None:
                    info = await self._stub.arrive_as_agent(agent_info(self.config))
                    self._session_is(info.session_id)
                    self.arrivals += 1
                    self.arrived.set()
                    log.info(
                        "arrived at the manager %s:%d%s: %s",
                        self.host,
                        self.port,
                        " again" if self.arrivals > 1 else "",
                        self.session_id,
                    )
                else:
                    await self._stub.remain(common.SessionInfo(session_id=self.session_id))
                backoff.succeeded()
                await asyncio.sleep(REMAIN_INTERVAL)
            except GRPCError as error:
                if error.status == Status.NOT_FOUND:
                    log.info("the manager forgot the session: arriving again")
                    self._session_is(None)
                    self.arrived.clear()
                    continue
                await self._wait(backoff, f"{error.status.name}: {error.message}")
            except (OSError, TimeoutError, StreamTerminatedError) as error:
                # The connection may be dead without the kernel knowing it (the manager's
                # pod went away and no FIN reached us): dial afresh instead of reusing it.
                self._channel.close()
                await self._wait(backoff, describe(error))
            except Exception as error:  # the app's traffic must outlive any manager fault
                log.warning("unexpected failure talking to the manager", exc_info=True)
                self._channel.close()
                await self._wait(backoff, describe(error))

    async def _wait(self, backoff: Backoff, reason: str) -> None:
        delay, _ = backoff.failed(reason)
        log.info("the manager is not reachable (%s); again in %.0f s", reason, delay)
        await asyncio.sleep(delay)

    async def depart(self) -> None:
        """Leave at once (best effort: the session expires anyway), then close."""
        try:
            if self.session_id is not None:
                await self._stub.depart(common.SessionInfo(session_id=self.session_id), timeout=2.0)
                log.info("departed: %s", self.session_id)
        except (GRPCError, OSError, TimeoutError, StreamTerminatedError) as error:
            log.info("could not depart (%s); the session will expire", describe(error))
        finally:
            self.session_id = None
            self._channel.close()


async def follow_log_level(channel: Channel, session_id: str) -> None:
    """Take the level `kubepresence loglevel` sets for the cluster, until the stream ends.
    Never fails the watch it runs beside: a manager without it, or a lost stream, is only
    logged (the intercept watch notices a lost manager on its own)."""
    watch = manager.ManagerStub(channel)  # no deadline: the watch lives with the session
    try:
        async for request in watch.watch_log_level(common.SessionInfo(session_id=session_id)):
            try:
                set_level_for(request.level, request.duration_seconds)
            except ValueError as error:
                log.warning("the manager asked for %s", error)
                continue
            log.info(
                "log level %s%s, as the manager says",
                request.level,
                f" for {request.duration_seconds} s" if request.duration_seconds else "",
            )
    except GRPCError as error:
        if error.status is not Status.UNIMPLEMENTED:
            log.info("log level watch ended: %s", describe(error))
    except (OSError, TimeoutError, StreamTerminatedError) as error:
        log.info("log level watch ended: %s", describe(error))
