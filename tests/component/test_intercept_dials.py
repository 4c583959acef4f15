"""Component test: an intercepted connection from an agent reaches the workstation.

The real manager service runs on a unix socket; the test plays the agent through the
manager's API (the in-cluster agent does the same calls); the client side is the user
daemon's real code (ManagerClient, answer_dials). Scenarios:
- an intercept waits for the workload's agent, becomes active when the agent accepts it,
  and its agent's environment reaches the client;
- a connection the agent hands over reaches the local server and carries bytes both ways;
- with nothing listening locally, the agent is told at once (DIAL_FAILED), no hang;
- a second global intercept of the same port is refused; leaving frees the port;
- an intercepted connection that lasts longer than the dial timeout keeps flowing;
- a dial the manager no longer has (withdrawn while the workstation dialled locally) ends
  that one connection with a KubepresenceError, never the daemon's dial answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from kptest.standins import local_echo

from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol import streams
from kubepresence.protocol.errors import KubepresenceError
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.transport import unix_channel
from kubepresence.protocol.tunnel import send_connected
from kubepresence.userd import answering
from kubepresence.userd.answering import answer_dials
from kubepresence.userd.rpc.manager import Dial, InterceptRequest, ManagerClient


@pytest.fixture
async def channel(manager_socket: Path) -> AsyncIterator[Channel]:
    ch = unix_channel(manager_socket)
    yield ch
    ch.close()


async def arrive_agent(stub: manager.ManagerStub) -> str:
    info = await stub.arrive_as_agent(
        common.AgentInfo(
            pod_name="echo-abc",
            namespace="shop",
            pod_ip="10.244.0.9",
            workload_name="echo",
            workload_kind=common.WorkloadKind.DEPLOYMENT,
            container="app",
            environment={"GREETING": "hello from the pod"},
        )
    )
    return info.session_id


async def review_when_seen(stub: manager.ManagerStub, agent: str) -> str:
    """The agent's side: watch its workload's intercepts, accept the first one."""
    async for snapshot in manager.ManagerStub(stub.channel).watch_intercepts(
        common.SessionInfo(session_id=agent)
    ):
        if snapshot.intercepts:
            intercept_id = snapshot.intercepts[0].id
            await stub.review_intercept(
                manager.ReviewInterceptRequest(
                    session=common.SessionInfo(session_id=agent),
                    intercept_id=intercept_id,
                    disposition=manager.Disposition.ACTIVE,
                )
            )
            return intercept_id
    raise AssertionError("watch ended")


async def hand_over(channel: Channel, agent: str, intercept_id: str) -> Any:
    stream = streams.hand_over(channel)
    return stream, common.TunnelMessage(
        open=common.TunnelOpen(
            session_id=agent,
            intercept_id=intercept_id,
            connection=common.ConnectionId(
                protocol=common.Protocol.TCP,
                source_ip=bytes([10, 244, 0, 5]),
                source_port=40000,
                destination_ip=bytes([10, 244, 0, 9]),
                destination_port=8080,
            ),
        )
    )


async def test_intercepted_connection_reaches_the_workstation(channel: Channel) -> None:
    stub = manager.ManagerStub(channel, timeout=10)
    client = ManagerClient(channel)
    session, _ = await client.arrive("dev@laptop", "laptop", "0.1.0")
    agent = await arrive_agent(stub)
    server, port = await local_echo()
    async with asyncio.TaskGroup() as group:
        reviewer = group.create_task(review_when_seen(stub, agent))
        view = await client.create_intercept(
            session,
            InterceptRequest("echo", "shop", "echo", "http", ("127.0.0.1", port)),
        )
        assert view.state == "waiting"
        intercept_id = await asyncio.wait_for(reviewer, 10)
        async for snapshot in client.watch_intercepts(session):
            if snapshot and snapshot[0].state == "active":
                assert snapshot[0].environment == {"GREETING": "hello from the pod"}
                break
        dials = group.create_task(answer_dials(client, lambda: session))

        request, opening = await hand_over(channel, agent, intercept_id)
        async with request as stream:
            await stream.send_message(opening)
            reply = await asyncio.wait_for(stream.recv_message(), 10)
            assert reply.control.code == common.TunnelControlCode.CONNECTED
            await stream.send_message(common.TunnelMessage(data=b"ping"))
            answer = await asyncio.wait_for(stream.recv_message(), 10)
            assert answer.data == b"workstation:ping"
            await stream.send_message(
                common.TunnelMessage(
                    control=common.TunnelControl(code=common.TunnelControlCode.WRITE_CLOSED)
                )
            )
            await stream.end()

        server.close()  # nothing listens locally any more: refused fast
        await server.wait_closed()
        request, opening = await hand_over(channel, agent, intercept_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with request as stream:
            await stream.send_message(opening)
            reply = await asyncio.wait_for(stream.recv_message(), 10)
            assert reply.control.code == common.TunnelControlCode.DIAL_FAILED
            await stream.end()
        assert loop.time() - started < 3
        dials.cancel()

    other, _ = await client.arrive("bob@laptop", "laptop2", "0.1.0")
    with pytest.raises(KubepresenceError, match="already intercepted"):
        await client.create_intercept(
            other,
            InterceptRequest("echo", "shop", "echo", "http", ("127.0.0.1", port)),
        )
    await client.remove_intercept(session, "echo")
    again = await client.create_intercept(
        other,
        InterceptRequest("echo", "shop", "echo", "http", ("127.0.0.1", port)),
    )
    assert again.state == "waiting"


@pytest.mark.timeout(30)  # waits out the manager's dial timeout
async def test_an_intercepted_connection_outlives_the_dial_timeout(
    channel: Channel, manager_service: ManagerService
) -> None:
    stub = manager.ManagerStub(channel, timeout=10)
    client = ManagerClient(channel)
    session, _ = await client.arrive("dev@laptop", "laptop", "0.1.0")
    agent = await arrive_agent(stub)
    server, port = await local_echo()
    async with asyncio.TaskGroup() as group:
        reviewer = group.create_task(review_when_seen(stub, agent))
        await client.create_intercept(
            session, InterceptRequest("echo", "shop", "echo", "http", ("127.0.0.1", port))
        )
        intercept_id = await asyncio.wait_for(reviewer, 10)
        async for snapshot in client.watch_intercepts(session):
            if snapshot and snapshot[0].state == "active":
                break
        dials = group.create_task(answer_dials(client, lambda: session))
        request, opening = await hand_over(channel, agent, intercept_id)
        async with request as stream:
            await stream.send_message(opening)
            reply = await asyncio.wait_for(stream.recv_message(), 10)
            assert reply.control.code == common.TunnelControlCode.CONNECTED
            # The scenario is a connection this long: held past the dial's deadline.
            await asyncio.sleep(manager_service._hand_overs.dials.timeout + 1.5)
            await stream.send_message(common.TunnelMessage(data=b"late"))
            answer = await asyncio.wait_for(stream.recv_message(), 10)
            assert answer.control is None
            assert answer.data == b"workstation:late"
            await stream.send_message(
                common.TunnelMessage(
                    control=common.TunnelControl(code=common.TunnelControlCode.WRITE_CLOSED)
                )
            )
            await stream.end()
        dials.cancel()
    server.close()
    await server.wait_closed()


async def test_a_withdrawn_dial_ends_only_its_connection(channel: Channel) -> None:
    client = ManagerClient(channel)
    session, _ = await client.arrive("dev@laptop", "laptop", "0.1.0")

    async def claim() -> None:
        async with client.answer_dial(session, "no-such-dial") as stream:
            await send_connected(stream)
            await asyncio.wait_for(stream.recv_message(), 10)

    with pytest.raises(KubepresenceError, match="no-such-dial"):
        await claim()
    server, port = await local_echo()
    try:
        # The answering of one dial returns (logged): the GRPCError used to escape and end
        # the task group that answers every dial.
        await asyncio.wait_for(
            answering._answer(client, session, Dial("no-such-dial", "echo", "127.0.0.1", port)),
            10,
        )
    finally:
        server.close()
        await server.wait_closed()
