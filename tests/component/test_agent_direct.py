"""Component test: an intercepted connection goes from the agent straight to the client.

The agent's real Agent service (`agent.rpc.direct` over `agent.direct.DirectDesk`) runs on
a unix socket (in the cluster: the pod's loopback, reached by a port-forward); the
client side is the user daemon's real code (`AgentClient`, `answer_dials`); the
intercepted connection goes through the agent's real `handing.hand_over`. Scenarios:
- while the intercept's client watches at the agent, a connection reaches the local
  server and carries bytes both ways, and the desk counts it as handed over straight;
- with nothing listening locally, the caller's connection ends at once (DIAL_FAILED), no
  hang;
- a client that does not watch here (another session), or no longer does (its watch
  ended), gets its connections through the manager's HandOver instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kptest.standins import local_echo
from kptest.waiting import eventually

from kubepresence.agent import handing
from kubepresence.agent.core.routing import AgentIntercept, Routes
from kubepresence.agent.direct import DirectDesk
from kubepresence.agent.rpc import flows
from kubepresence.agent.rpc.direct import AgentService
from kubepresence.protocol.transport import serve_unix, unix_channel
from kubepresence.userd.answering import answer_dials
from kubepresence.userd.rpc.agent import AgentClient

DEADLINE = 10.0
CLIENT = "client-1"


class FakeSession:
    session_id = "agent-1"
    channel = None


def hand_overs(desk: DirectDesk, *intercepts: AgentIntercept) -> handing.HandOvers:
    routes = Routes()
    routes.update(intercepts)
    return handing.HandOvers(FakeSession(), routes, desk)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def watching(tmp_path: Path, desk: DirectDesk) -> AsyncIterator[asyncio.Task[None]]:
    """The agent's service, and the client's dial answering watching there."""
    path = tmp_path / "agent.socket"
    server = await serve_unix([AgentService(desk)], path)
    channel = unix_channel(path)
    answering = asyncio.create_task(answer_dials(AgentClient(channel, "echo-abc"), lambda: CLIENT))
    try:
        await eventually(lambda: desk.watching(CLIENT), "the client watches", within=DEADLINE)
        yield answering
    finally:
        answering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await answering
        channel.close()
        server.close()
        await server.wait_closed()


async def intercepted(
    routes: handing.HandOvers, intercept_id: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Task[None]]:
    """A caller's connection as the agent accepted it, being handed over."""
    caller, accepted = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=accepted)
    task = asyncio.create_task(handing.hand_over(routes, intercept_id, reader, writer))
    caller_reader, caller_writer = await asyncio.open_connection(sock=caller)
    return caller_reader, caller_writer, task


async def test_a_watching_client_takes_the_connection_straight(tmp_path: Path) -> None:
    server, port = await local_echo()
    desk = DirectDesk()
    intercept = AgentIntercept("i1", "http", True, client=CLIENT, workstation=("127.0.0.1", port))
    async with watching(tmp_path, desk):
        caller_reader, caller_writer, task = await intercepted(hand_overs(desk, intercept), "i1")
        caller_writer.write(b"hello")
        async with asyncio.timeout(DEADLINE):
            assert await caller_reader.readexactly(17) == b"workstation:hello"
        caller_writer.write_eof()
        async with asyncio.timeout(DEADLINE):
            assert await caller_reader.read() == b""
            await task
        caller_writer.close()
    assert desk.handed_over == 1
    server.close()


async def test_nothing_listening_locally_ends_the_caller_at_once(tmp_path: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    desk = DirectDesk()
    intercept = AgentIntercept(
        "i1", "http", True, client=CLIENT, workstation=("127.0.0.1", closed_port)
    )
    async with watching(tmp_path, desk):
        caller_reader, caller_writer, task = await intercepted(hand_overs(desk, intercept), "i1")
        async with asyncio.timeout(DEADLINE):
            assert await caller_reader.read() == b""  # aborted (a socket pair has no RST)
            await task
        caller_writer.close()


async def test_a_client_that_does_not_watch_here_goes_through_the_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    through_manager: list[tuple[Any, ...]] = []

    class ManagerHandOver:
        def __init__(self, *args: Any) -> None:
            through_manager.append(args[1:3])  # (agent session, intercept id)

        async def __aenter__(self) -> Any:
            raise ConnectionRefusedError("the test's manager refuses")

        async def __aexit__(self, *_: object) -> None:
            return None

    monkeypatch.setattr(flows, "hand_over", ManagerHandOver)
    desk = DirectDesk()
    other = AgentIntercept("i2", "http", True, client="client-2", workstation=("127.0.0.1", 1))
    mine = AgentIntercept("i1", "http", True, client=CLIENT, workstation=("127.0.0.1", 1))
    routes = hand_overs(desk, other, mine)
    async with watching(tmp_path, desk):
        _, writer, task = await intercepted(routes, "i2")
        await asyncio.wait_for(task, DEADLINE)
        writer.close()
    assert through_manager == [("agent-1", "i2")]
    # The watch ended: this client's connections go through the manager again.
    assert not desk.watching(CLIENT)
    _, writer, task = await intercepted(routes, "i1")
    await asyncio.wait_for(task, DEADLINE)
    writer.close()
    assert through_manager == [("agent-1", "i2"), ("agent-1", "i1")]
    assert desk.handed_over == 0
