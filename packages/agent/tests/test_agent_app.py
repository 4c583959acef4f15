"""The whole agent under the shared supervisor, against an echo app and a fake manager.

Scenarios:
- the agent arrives at the manager and passes a connection to the app; its health port
  (the readiness probe's) answers by closing, and no probe reaches the app;
- on a stop request it departs at once, keeps accepting for a moment (the pod is still
  in its Services' endpoints), then stops accepting and returns within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest
import uvloop
from grpclib.server import Server
from kptest.waiting import eventually

from kubepresence.agent import app as app_module
from kubepresence.agent.app import TrafficAgent
from kubepresence.agent.core.config import AgentConfig
from kubepresence.agent.rpc import manager as session_module
from kubepresence.protocol.agents import PortTakeover
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.lifecycle import Supervisor, supervise


class FakeManager(manager.ManagerBase):
    def __init__(self) -> None:
        self.arrived: list[str] = []
        self.remains = 0
        self.departed: list[tuple[float, str]] = []
        self.has_arrived = asyncio.Event()
        self.has_departed = asyncio.Event()

    async def arrive_as_agent(self, message: common.AgentInfo) -> common.SessionInfo:
        self.arrived.append(message.pod_name)
        self.has_arrived.set()
        return common.SessionInfo(session_id=f"agent-{len(self.arrived)}")

    async def remain(self, message: common.SessionInfo) -> protobuf.Empty:
        self.remains += 1
        return protobuf.Empty()

    async def depart(self, message: common.SessionInfo) -> protobuf.Empty:
        self.departed.append((time.monotonic(), message.session_id))
        self.has_departed.set()
        return protobuf.Empty()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def probe(port: int) -> bytes:
    """What the kubelet's TCP readiness probe does: connect (and read what comes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_agent_serves_arrives_and_stops_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "REMAIN_INTERVAL", 0.1)
    monkeypatch.setattr(app_module, "LINGER", 0.5)
    app_port, agent_port, manager_port = free_port(), free_port(), free_port()
    health_port = free_port()
    app_connections = 0

    async def counted_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal app_connections
        app_connections += 1
        await echo(reader, writer)

    app_server = await asyncio.start_server(counted_echo, "127.0.0.1", app_port)
    fake = FakeManager()
    grpc = Server([fake])
    await grpc.start("127.0.0.1", manager_port)
    config = AgentConfig(
        pod_name="echo-abc",
        namespace="shop",
        pod_ip="127.0.0.1",
        ports=(PortTakeover("http", app_port, agent_port),),
        health_port=health_port,
    )
    agent = TrafficAgent(config, "127.0.0.1", manager_port, listen_host="127.0.0.1")
    supervisors: list[Supervisor] = []

    async def main(sup: Supervisor) -> None:
        supervisors.append(sup)
        await agent.run(sup)

    running = asyncio.create_task(supervise(main, handle_signals=False))
    try:
        await asyncio.wait_for(fake.has_arrived.wait(), 5)
        assert fake.arrived == ["echo-abc"]
        assert await round_trip(agent_port, b"before the stop") == b"before the stop"
        assert await probe(health_port) == b""  # a connection, closed at once
        assert app_connections == 1

        stopped = time.monotonic()
        supervisors[0].request_stop("test over")
        await asyncio.wait_for(fake.has_departed.wait(), 2)
        # Departed at once, and still passing connections while it lingers.
        assert fake.departed[0][0] - stopped < 1.0
        assert await round_trip(agent_port, b"while lingering") == b"while lingering"
        await asyncio.wait_for(running, 5)
        assert time.monotonic() - stopped < 4.5
        with pytest.raises(ConnectionRefusedError):
            await round_trip(agent_port, b"after")
        with pytest.raises(ConnectionRefusedError):
            await probe(health_port)
        assert fake.departed[0][1] == "agent-1"
    finally:
        running.cancel()
        grpc.close()
        await grpc.wait_closed()
        app_server.close()
        await app_server.wait_closed()


class FreezingRelay:
    """A TCP relay whose open connections can go dead without a FIN: a vanished peer."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False  # connections open now stop carrying bytes; new ones work
        self.connections = 0
        self.redialled = asyncio.Event()  # a second connection came
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.connections > 1:
            self.redialled.set()
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        born_frozen = self.frozen

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if self.frozen and not born_frozen:
                    return  # swallow everything from now on, close nothing
                dst.write(data)
                await dst.drain()

        for task in (pump(reader, up_writer), pump(up_reader, writer)):
            created = asyncio.create_task(task)
            self._tasks.add(created)
            created.add_done_callback(self._tasks.discard)


async def test_session_dials_afresh_when_its_connection_goes_dead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session_module, "REMAIN_INTERVAL", 0.1)
    monkeypatch.setattr(session_module, "CALL_TIMEOUT", 0.5)
    monkeypatch.setattr(session_module, "RETRY_FIRST", 0.1)
    monkeypatch.setattr(session_module, "RETRY_LIMIT", 0.1)
    manager_port, relay_port = free_port(), free_port()
    fake = FakeManager()
    grpc = Server([fake])
    await grpc.start("127.0.0.1", manager_port)
    relay = FreezingRelay(manager_port)
    relay_server = await asyncio.start_server(relay.handle, "127.0.0.1", relay_port)
    config = AgentConfig(pod_name="echo-abc", namespace="shop", pod_ip="127.0.0.1", ports=())
    session = session_module.ManagerSession(config, "127.0.0.1", relay_port)
    keeping = asyncio.create_task(session.run())
    try:
        await asyncio.wait_for(fake.has_arrived.wait(), 5)
        assert relay.connections == 1
        relay.frozen = True
        # The old connection swallows the next remain; the session must give up on it
        # and dial a new one rather than time out on the dead one forever.
        await asyncio.wait_for(relay.redialled.wait(), 5)
        remains = fake.remains
        await eventually(lambda: fake.remains > remains, "remains over the new connection")
        assert fake.remains > remains
        assert (session.session_id, fake.arrived) == ("agent-1", ["echo-abc"])
    finally:
        # The session ends before its channel closes: a close racing the cancel reaches
        # the session as StreamTerminatedError, which it takes for a lost manager.
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(keeping, 5)
        session.channel.close()
        relay_server.close()
        grpc.close()
        await grpc.wait_closed()


async def test_a_taken_health_port_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        config = AgentConfig(
            pod_name="echo-abc", namespace="shop", pod_ip="127.0.0.1", health_port=port
        )
        agent = TrafficAgent(config, "127.0.0.1", free_port(), listen_host="127.0.0.1")
        assert await agent._open_health_port() is None
    assert f"cannot open the health port {port}" in caplog.text


def test_an_agent_made_outside_the_loop_arrives_from_the_daemons_loop() -> None:
    """`__main__` makes the agent before the daemon's uvloop exists: whatever holds a
    grpclib channel must be made in `run`, on that loop, or the agent never arrives."""
    config = AgentConfig(pod_name="echo-abc", namespace="shop", pod_ip="127.0.0.1")
    manager_port = free_port()
    agent = TrafficAgent(config, "127.0.0.1", manager_port, listen_host="127.0.0.1")

    async def scenario() -> list[str]:
        fake = FakeManager()
        grpc = Server([fake])
        await grpc.start("127.0.0.1", manager_port)

        async def main(supervisor: Supervisor) -> None:
            running = asyncio.create_task(agent.run(supervisor))
            try:
                await asyncio.wait_for(fake.has_arrived.wait(), 5)
            finally:
                supervisor.request_stop("test over")
                await running

        try:
            await supervise(main, handle_signals=False)
        finally:
            grpc.close()
            await grpc.wait_closed()
        return fake.arrived

    assert uvloop.run(scenario()) == ["echo-abc"]
