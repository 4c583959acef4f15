"""The hand-over desk on plain types (flows.handovers), with fake tunnels.

Scenarios:
- an agent's hand-over is posted to the intercept's client (its connection passed on
  unread, the local address named) and spliced with the client's answer, both ways;
- a client that leaves refuses its waiting hand-overs at once with DIAL_FAILED;
- an answer to a dial nobody posted is NOT_FOUND.
"""

from __future__ import annotations

import asyncio

import pytest

from kubepresence.manager.core.intercepts import Intercept, Target
from kubepresence.manager.flows.handovers import HandOverDesk, PostedHandOver
from kubepresence.protocol.errors import NotFoundError
from kubepresence.protocol.gen import common

INTERCEPT = Intercept(
    id="i-1",
    client="client-1",
    name="echo",
    target=Target("shop", "echo", "http"),
    local_host="127.0.0.1",
    local_port=8080,
    filter=None,
)


class FakePipe:
    def __init__(self) -> None:
        self.incoming: asyncio.Queue[common.TunnelMessage | None] = asyncio.Queue()
        self.sent: asyncio.Queue[common.TunnelMessage] = asyncio.Queue()

    async def recv_message(self) -> common.TunnelMessage | None:
        return await self.incoming.get()

    async def send_message(self, message: common.TunnelMessage) -> None:
        self.sent.put_nowait(message)


async def first_posted(desk: HandOverDesk, client: str) -> PostedHandOver:
    async with asyncio.timeout(5):
        async for posted in desk.watch(client):
            if posted is not None:
                return posted
    raise AssertionError("the watch ended")


async def test_a_hand_over_is_posted_and_spliced_with_the_answer() -> None:
    desk = HandOverDesk(now=lambda: 0.0, dial_timeout=5)
    agent, client = FakePipe(), FakePipe()
    async with asyncio.TaskGroup() as group:
        waiting = group.create_task(desk.agent_tunnel(agent, "agent-1", INTERCEPT, b"\x08\x06"))
        posted = await first_posted(desk, "client-1")
        assert (posted.intercept_id, posted.connection) == ("i-1", b"\x08\x06")
        assert (posted.local_host, posted.local_port) == ("127.0.0.1", 8080)
        answering = group.create_task(desk.client_tunnel("client-1", client, posted.dial_id))
        client.incoming.put_nowait(common.TunnelMessage(data=b"down"))
        agent.incoming.put_nowait(common.TunnelMessage(data=b"up"))
        async with asyncio.timeout(5):
            assert (await agent.sent.get()).data == b"down"
            assert (await client.sent.get()).data == b"up"
        client.incoming.put_nowait(None)  # the client ends its stream: the splice ends
        async with asyncio.timeout(5):
            await answering
            await waiting
    assert len(desk.dials) == 0


async def test_a_client_that_leaves_refuses_its_waiting_hand_overs_at_once() -> None:
    desk = HandOverDesk(now=lambda: 0.0, dial_timeout=60)
    agent = FakePipe()
    async with asyncio.TaskGroup() as group:
        waiting = group.create_task(desk.agent_tunnel(agent, "agent-1", INTERCEPT, b""))
        await first_posted(desk, "client-1")
        desk.client_gone("client-1")
        async with asyncio.timeout(5):  # far less than the dial timeout
            await waiting
            reply = await agent.sent.get()
    assert reply.control is not None
    assert reply.control.code == common.TunnelControlCode.DIAL_FAILED
    assert "did not answer" in reply.control.message


async def test_an_answer_nobody_waits_for_is_not_found() -> None:
    desk = HandOverDesk(now=lambda: 0.0, dial_timeout=5)
    with pytest.raises(NotFoundError):
        await desk.client_tunnel("client-1", FakePipe(), "no-such-dial")
