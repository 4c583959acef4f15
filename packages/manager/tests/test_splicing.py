"""The rendezvous of a waiting tunnel: answered in time, not answered, given up."""

from __future__ import annotations

import asyncio
from typing import cast

from kptest.waiting import eventually

from kubepresence.manager.flows.splicing import Pipe, Rendezvous
from kubepresence.protocol.gen import common


class FakeStream:
    """One side of a tunnel: messages to receive, messages sent."""

    def __init__(self, *incoming: common.TunnelMessage) -> None:
        self.incoming: asyncio.Queue[common.TunnelMessage | None] = asyncio.Queue()
        for message in incoming:
            self.incoming.put_nowait(message)
        self.sent: list[common.TunnelMessage] = []

    async def recv_message(self) -> common.TunnelMessage | None:
        return await self.incoming.get()

    async def send_message(self, message: common.TunnelMessage) -> None:
        self.sent.append(message)


def stream(fake: FakeStream) -> Pipe:
    return cast(Pipe, fake)


async def test_the_waiting_side_waits_for_the_whole_splice_not_the_answer_time() -> None:
    waiting, answering = FakeStream(), FakeStream(common.TunnelMessage(data=b"up"))
    meeting = Rendezvous(stream(waiting))
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = asyncio.create_task(meeting.wait(answer_within=0.05))
    splice = asyncio.create_task(meeting.splice(stream(answering)))
    await asyncio.wait_for(meeting.answered.wait(), 5)
    # Twice the answer time gone and the splice pumping: the waiter must still be waiting.
    await eventually(
        lambda: loop.time() - started > 0.1 and waiting.sent, "the answer time passed, spliced"
    )
    assert not waiter.done()
    answering.incoming.put_nowait(None)  # the answering side ends its stream
    assert await asyncio.wait_for(waiter, 5) is True
    await splice
    assert [m.data for m in waiting.sent] == [b"up"]


async def test_nobody_answers_in_time() -> None:
    meeting = Rendezvous(stream(FakeStream()))
    assert await meeting.wait(answer_within=0.01) is False
    assert meeting.failure == ""


async def test_a_given_up_dial_ends_the_wait_at_once_with_its_reason() -> None:
    meeting = Rendezvous(stream(FakeStream()))
    waiter = asyncio.create_task(meeting.wait(answer_within=60))
    meeting.fail("the traffic agent left")
    assert await asyncio.wait_for(waiter, 5) is False
    assert meeting.failure == "the traffic agent left"
    meeting.fail("again")  # only the first reason counts
    assert meeting.failure == "the traffic agent left"
