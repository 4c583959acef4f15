"""The agent's manager session against a fake manager on 127.0.0.1.

Scenarios:
- the agent arrives with its pod, workload, ports and the app's environment, and remains;
- the manager goes away: the agent keeps trying with backoff; a new manager (which knows
  no sessions) comes up on the same port: the agent's Remain gets NOT_FOUND and it
  arrives again;
- depart tells the manager at once.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server
from kptest.waiting import eventually

from kubepresence.agent.core.config import AgentConfig
from kubepresence.agent.rpc import manager as session_module
from kubepresence.agent.rpc.manager import ManagerSession
from kubepresence.protocol.agents import PortTakeover
from kubepresence.protocol.backoff import Backoff
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.gen.google import protobuf

CONFIG = AgentConfig(
    pod_name="echo-abc",
    namespace="shop",
    pod_ip="10.244.0.5",
    workload_kind="Deployment",
    workload_name="echo",
    container="echo",
    ports=(PortTakeover("http", 8080, 9900),),
    environment={"GREETING": "hello"},
)


class FakeManager(manager.ManagerBase):
    def __init__(self, name: str) -> None:
        self.name = name
        self.arrived: list[common.AgentInfo] = []
        self.remains = 0
        self.departed: list[str] = []
        self.sessions: set[str] = set()
        self.changed = asyncio.Event()

    async def arrive_as_agent(self, message: common.AgentInfo) -> common.SessionInfo:
        self.arrived.append(message)
        session_id = f"{self.name}-agent-{len(self.arrived)}"
        self.sessions.add(session_id)
        self.changed.set()
        return common.SessionInfo(session_id=session_id)

    async def remain(self, message: common.SessionInfo) -> protobuf.Empty:
        if message.session_id not in self.sessions:
            raise GRPCError(Status.NOT_FOUND, "unknown session; arrive again")
        self.remains += 1
        self.changed.set()
        return protobuf.Empty()

    async def depart(self, message: common.SessionInfo) -> protobuf.Empty:
        self.departed.append(message.session_id)
        self.changed.set()
        return protobuf.Empty()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(what: str, condition: object, fake: FakeManager, limit: float = 10) -> None:
    async with asyncio.timeout(limit):
        while not condition():  # type: ignore[operator]
            fake.changed.clear()
            await fake.changed.wait()


@pytest.fixture(autouse=True)
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Short intervals; the delays taken, one per failed call to the manager."""
    taken: list[float] = []

    class Recording(Backoff):
        def failed(self, reason: str = "") -> tuple[float, bool]:
            delay, news = super().failed(reason)
            taken.append(delay)
            return delay, news

    monkeypatch.setattr(session_module, "REMAIN_INTERVAL", 0.1)
    monkeypatch.setattr(session_module, "RETRY_FIRST", 0.05)
    monkeypatch.setattr(session_module, "RETRY_LIMIT", 0.2)
    monkeypatch.setattr(session_module, "Backoff", Recording)
    return taken


async def serve(fake: FakeManager, port: int) -> Server:
    server = Server([fake])
    await server.start("127.0.0.1", port)
    return server


class Proxy:
    """The manager's address: a TCP proxy the test can cut (as a dying manager pod would)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, target: int) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
            self._writers += [writer, up_writer]
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self._server = await asyncio.start_server(
            accepted, "127.0.0.1", self.port, reuse_address=True
        )

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()


async def test_arrive_remain_lose_and_arrive_again(backoffs: list[float]) -> None:
    port = free_port()
    proxy = Proxy(port)
    first = FakeManager("first")
    server = await serve(first, first_port := free_port())
    await proxy.start(first_port)
    session = ManagerSession(CONFIG, "127.0.0.1", port)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(session.run())
        await until("arrival", lambda: first.remains >= 2, first)
        [info] = first.arrived
        assert (info.pod_name, info.namespace, info.pod_ip) == ("echo-abc", "shop", "10.244.0.5")
        assert (info.workload_name, info.workload_kind) == ("echo", common.WorkloadKind.DEPLOYMENT)
        assert info.container == "echo"
        assert [(p.name, p.port, p.agent_port) for p in info.ports] == [("http", 8080, 9900)]
        assert info.environment == {"GREETING": "hello"}

        await proxy.cut()
        server.close()
        await server.wait_closed()
        remains, failures = first.remains, len(backoffs)
        await eventually(lambda: len(backoffs) >= failures + 3, "the agent failed and backed off")
        assert first.remains == remains
        assert session.session_id == "first-agent-1"  # kept: the manager may still know it

        second = FakeManager("second")  # a restarted manager knows no sessions
        server = await serve(second, second_port := free_port())
        await proxy.start(second_port)
        await until("arrival again", lambda: second.remains >= 1, second)
        assert [a.pod_name for a in second.arrived] == ["echo-abc"]
        assert session.arrivals == 2
        task.cancel()
    await session.depart()
    assert second.departed == ["second-agent-1"]
    await proxy.cut()
    server.close()
    await server.wait_closed()


async def test_no_manager_at_all_is_retried_without_end(backoffs: list[float]) -> None:
    session = ManagerSession(CONFIG, "127.0.0.1", free_port())
    task = asyncio.create_task(session.run())
    await eventually(lambda: len(backoffs) >= 3 or task.done(), "three failed arrivals")
    assert not task.done()  # still trying, no crash
    assert len(backoffs) >= 3
    assert session.session_id is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await session.depart()  # nothing to depart from: quiet
