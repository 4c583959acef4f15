"""Client of a traffic agent's Agent service, over a port-forward to its pod: the dials
of our intercepts that this agent posts to us straight (see the agent's `direct`).

The same two calls as the manager's hand-overs (`ManagerClient.watch_dials` and
`answer_dial`), so `answering` serves both alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from grpclib.client import Channel

from kubepresence.protocol import streams
from kubepresence.protocol.gen import agent, common
from kubepresence.protocol.transport import client_errors
from kubepresence.userd.rpc.manager import Dial


class AgentClient:
    def __init__(self, channel: Channel, pod: str) -> None:
        self._channel = channel
        self._watch_stub = agent.AgentStub(channel)  # the watch lives as long as we want it
        self._what = f"the agent in pod {pod} does not answer"

    async def watch_dials(self, session_id: str) -> AsyncIterator[Dial]:
        """Inbound connections of our intercepts to take (empty dial ids are keep-alives)."""
        async with client_errors(self._what):
            async for dial in self._watch_stub.watch_dials(
                common.SessionInfo(session_id=session_id)
            ):
                yield Dial(dial.dial_id, dial.intercept_id, dial.local_host, dial.local_port)

    @contextlib.asynccontextmanager
    async def answer_dial(self, session_id: str, dial_id: str) -> AsyncIterator[Any]:
        """An Agent AnswerDial tunnel claiming `dial_id`, its open sent; yields the stream."""
        async with client_errors(self._what), streams.agent_answer_dial(self._channel) as stream:
            await stream.send_message(
                common.TunnelMessage(open=common.TunnelOpen(session_id=session_id, dial_id=dial_id))
            )
            yield stream
