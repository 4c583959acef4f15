"""The agent runs under the shared supervisor and stops when asked."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kubepresence.agent.app import TrafficAgent
from kubepresence.protocol.lifecycle import Supervisor, supervise


async def test_agent_stops_on_request(caplog: pytest.LogCaptureFixture) -> None:
    agent = TrafficAgent(manager_address="manager.test:8081")

    async def main(sup: Supervisor) -> None:
        asyncio.get_running_loop().call_later(0.05, sup.request_stop, "test over")
        await agent.run(sup)

    with caplog.at_level(logging.INFO):
        await asyncio.wait_for(supervise(main, handle_signals=False), 5)
    assert "manager.test:8081" in caplog.text
