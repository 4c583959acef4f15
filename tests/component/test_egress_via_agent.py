"""Component test: client flows that leave the cluster from a workload's agent (proxy-via).

The real manager service runs on a unix socket; the agents are the agent's real egress
code (`kubepresence.agent.proxying.EgressDialer`, watching WatchEgressDials and answering
with tunnels), each with a session arrived as the in-cluster agent does; the client side
opens Tunnels as userd forwards rootd's (TunnelOpen naming the workload to leave from).
Scenarios:
- a TCP flow via a workload reaches an echo server, dialled by the agent (counted there)
  and not by the manager's own dial path; 1 MiB goes both ways intact, with half-close;
- a flow that lasts longer than the dial timeout keeps flowing;
- no agent of the workload: DIAL_FAILED at once, one clear line;
- an agent that never answers: DIAL_FAILED at the dial timeout; an agent that departs
  while its dial is pending: DIAL_FAILED at once;
- two agents of the workload share the flows;
- a UDP flow via a workload carries datagrams both ways, dialled by the agent;
- a destination the agent cannot reach: DIAL_FAILED from the agent, passed through;
- the whole agent (its composition root, against the manager on loopback TCP) follows its
  egress dials once it has a session, and drops an open egress flow when it stops,
  within its grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel

from kubepresence.agent import app as agent_app
from kubepresence.agent.app import TrafficAgent
from kubepresence.agent.core.config import AgentConfig
from kubepresence.agent.proxying import EgressDialer
from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.lifecycle import Supervisor, supervise
from kubepresence.protocol.transport import serve_tcp, tcp_channel, unix_channel
from kubepresence.protocol.tunnel import control, relay
from kubepresence.userd.rpc.manager import ManagerClient

NAMESPACE, WORKLOAD = "shop", "egress"
DEADLINE = 20.0


@pytest.fixture
async def channel(manager_socket: Path) -> AsyncIterator[Channel]:
    ch = unix_channel(manager_socket)
    yield ch
    ch.close()


@pytest.fixture
def own_dials(manager_service: ManagerService, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The flows the manager dials itself ("tcp" or "udp"), recorded as they start."""
    dialled: list[str] = []
    own_flow = manager_service._own_flow

    async def counted(stream: Any, host: str, port: int, udp: bool, idle: float) -> None:
        dialled.append("udp" if udp else "tcp")
        await own_flow(stream, host, port, udp, idle)

    monkeypatch.setattr(manager_service, "_own_flow", counted)
    return dialled


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait (at most `limit` seconds) for a condition that another task makes true."""
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - a bounded poll of another task's state
            await asyncio.sleep(0.01)


async def arrive_agent(channel: Channel, pod: str, workload: str = WORKLOAD) -> str:
    info = await manager.ManagerStub(channel, timeout=10).arrive_as_agent(
        common.AgentInfo(
            pod_name=pod,
            namespace=NAMESPACE,
            pod_ip="127.0.0.1",
            workload_name=workload,
            workload_kind=common.WorkloadKind.DEPLOYMENT,
        )
    )
    return info.session_id


@contextlib.asynccontextmanager
async def agents(channel: Channel, *pods: str) -> AsyncIterator[list[EgressDialer]]:
    """Agents of the workload, arrived and following their egress dials."""
    dialers = []
    async with asyncio.TaskGroup() as group:
        watches = []
        for pod in pods:
            session = await arrive_agent(channel, pod)
            dialer = EgressDialer()
            dialer.start(group)
            watches.append(group.create_task(dialer.follow(channel, session), name=pod))
            dialers.append(dialer)
        try:
            yield dialers
        finally:
            for watch in watches:
                watch.cancel()
            for dialer in dialers:
                dialer.abort()


async def client_session(channel: Channel) -> str:
    session, _ = await ManagerClient(channel).arrive("dev@laptop", "laptop", "0.1.0")
    return session


def opening(
    session: str, port: int, *, udp: bool = False, workload: str = WORKLOAD
) -> common.TunnelMessage:
    return common.TunnelMessage(
        open=common.TunnelOpen(
            session_id=session,
            connection=common.ConnectionId(
                protocol=common.Protocol.UDP if udp else common.Protocol.TCP,
                source_ip=bytes([10, 0, 0, 1]),
                source_port=40000,
                destination_ip=bytes([127, 0, 0, 1]),
                destination_port=port,
            ),
            idle_timeout=timedelta(seconds=30),
            via_namespace=NAMESPACE,
            via_workload=workload,
        )
    )


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
    """A TCP echo server on loopback (half-closes after the client's half-close); the
    peers it accepted."""
    peers: list[tuple[str, int]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], peers
    server.close()
    await server.wait_closed()


async def first_reply(stream: Any) -> common.TunnelControl:
    reply: common.TunnelMessage | None = await asyncio.wait_for(stream.recv_message(), DEADLINE)
    assert reply is not None
    assert reply.control is not None
    return reply.control


async def echo_via(channel: Channel, session: str, port: int, payload: bytes) -> bytes:
    """`payload` through a flow via the workload to the echo server; what came back."""
    app_side, relay_side = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=relay_side)
    app_reader, app_writer = await asyncio.open_connection(sock=app_side)

    async def application() -> bytes:
        app_writer.write(payload)
        await app_writer.drain()
        app_writer.write_eof()  # the half-close travels to the echo server
        received = await app_reader.read()  # until the echo's half-close comes back
        app_writer.close()
        return received

    async with ManagerClient(channel).dial_cluster_stream() as stream:
        await stream.send_message(opening(session, port))
        reply = await first_reply(stream)
        assert reply.code == common.TunnelControlCode.CONNECTED, reply.message
        async with asyncio.TaskGroup() as group:
            app = group.create_task(application())
            await asyncio.wait_for(relay(stream, reader, writer, idle_timeout=10.0), DEADLINE)
        await stream.end()
    return app.result()


async def test_a_flow_via_a_workload_is_dialled_by_its_agent(
    channel: Channel, echo_server: tuple[int, list[tuple[str, int]]], own_dials: list[str]
) -> None:
    port, peers = echo_server
    session = await client_session(channel)
    payload = os.urandom(1024 * 1024)
    async with agents(channel, "egress-a") as (agent,):
        received = await echo_via(channel, session, port, payload)
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        assert (agent.dialled, len(peers), own_dials) == (1, 1, [])
        # The same flow without a workload to leave from: the manager dials it itself.
        async with ManagerClient(channel).dial_cluster_stream() as stream:
            direct = opening(session, port)
            assert direct.open is not None
            direct.open.via_namespace = direct.open.via_workload = ""
            await stream.send_message(direct)
            assert (await first_reply(stream)).code == common.TunnelControlCode.CONNECTED
            await stream.send_message(control(common.TunnelControlCode.WRITE_CLOSED))
            await stream.end()
        assert (agent.dialled, len(peers), own_dials) == (1, 2, ["tcp"])


@pytest.mark.timeout(30)  # waits out the manager's dial timeout
async def test_a_flow_outlives_the_dial_timeout(
    channel: Channel,
    echo_server: tuple[int, list[tuple[str, int]]],
    manager_service: ManagerService,
) -> None:
    port, _ = echo_server
    session = await client_session(channel)
    async with (
        agents(channel, "egress-a"),
        ManagerClient(channel).dial_cluster_stream() as stream,
    ):
        await stream.send_message(opening(session, port))
        assert (await first_reply(stream)).code == common.TunnelControlCode.CONNECTED
        await stream.send_message(common.TunnelMessage(data=b"early"))
        assert (await asyncio.wait_for(stream.recv_message(), DEADLINE)).data == b"early"
        # The scenario is a flow this long: both sides hold it past the dial's deadline.
        await asyncio.sleep(manager_service._egress.dials.timeout + 1.5)
        await stream.send_message(common.TunnelMessage(data=b"late"))
        late = await asyncio.wait_for(stream.recv_message(), DEADLINE)
        assert late.control is None
        assert late.data == b"late"
        await stream.send_message(control(common.TunnelControlCode.WRITE_CLOSED))
        closed = await asyncio.wait_for(stream.recv_message(), DEADLINE)
        assert closed.control.code == common.TunnelControlCode.WRITE_CLOSED
        await stream.end()


async def test_no_agent_of_the_workload_fails_at_once(channel: Channel) -> None:
    session = await client_session(channel)
    await arrive_agent(channel, "other-a", workload="other")  # another workload's agent
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with ManagerClient(channel).dial_cluster_stream() as stream:
        await stream.send_message(opening(session, 9, workload="ghost"))
        reply = await first_reply(stream)
        await stream.end()
    assert reply.code == common.TunnelControlCode.DIAL_FAILED
    assert reply.message == "no traffic agent of workload shop/ghost is connected"
    assert loop.time() - started < 1.0


@pytest.mark.timeout(30)  # waits out the manager's dial timeout
async def test_an_agent_that_does_not_answer_fails_the_flow(
    channel: Channel, manager_service: ManagerService
) -> None:
    session = await client_session(channel)
    await arrive_agent(channel, "egress-silent")  # arrived, never watches its dials
    timeout = manager_service._egress.dials.timeout
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with ManagerClient(channel).dial_cluster_stream() as stream:
        await stream.send_message(opening(session, 9))
        reply = await first_reply(stream)
        await stream.end()
    took = loop.time() - started
    assert reply.code == common.TunnelControlCode.DIAL_FAILED
    assert reply.message == "the traffic agent of shop/egress did not answer"
    assert timeout <= took < timeout + 3


async def test_an_agent_that_departs_fails_its_pending_dial_at_once(
    channel: Channel, manager_service: ManagerService
) -> None:
    session = await client_session(channel)
    agent = await arrive_agent(channel, "egress-leaving")
    stub = manager.ManagerStub(channel, timeout=10)
    async with ManagerClient(channel).dial_cluster_stream() as stream:
        await stream.send_message(opening(session, 9))
        await until(lambda: len(manager_service._egress.dials) == 1)
        loop = asyncio.get_running_loop()
        departed = loop.time()
        await stub.depart(common.SessionInfo(session_id=agent))
        reply = await first_reply(stream)
        await stream.end()
    assert reply.code == common.TunnelControlCode.DIAL_FAILED
    assert "left" in reply.message
    assert loop.time() - departed < manager_service._egress.dials.timeout
    assert len(manager_service._egress.dials) == 0


async def test_two_agents_of_the_workload_share_the_flows(
    channel: Channel,
    echo_server: tuple[int, list[tuple[str, int]]],
    own_dials: list[str],
    manager_service: ManagerService,
) -> None:
    port, peers = echo_server
    session = await client_session(channel)

    def manager_done() -> bool:  # the manager's side of every flow has ended too
        return not manager_service._egress._rendezvous

    async with agents(channel, "egress-a", "egress-b") as dialers:
        for n in range(4):
            assert await echo_via(channel, session, port, b"flow %d" % n) == b"flow %d" % n
            await until(manager_done)
        assert [d.dialled for d in dialers] == [2, 2]
        # Open at once, before any is answered: spread as well.
        together = await asyncio.gather(
            *(echo_via(channel, session, port, b"burst %d" % n) for n in range(4))
        )
        assert together == [b"burst %d" % n for n in range(4)]
        assert [d.dialled for d in dialers] == [4, 4]
    assert (len(peers), own_dials) == (8, [])


async def test_a_udp_flow_via_a_workload_is_dialled_by_its_agent(
    channel: Channel, own_dials: list[str]
) -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data.upper(), addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = echo.get_extra_info("sockname")[1]
    session = await client_session(channel)
    try:
        async with (
            agents(channel, "egress-a") as (agent,),
            ManagerClient(channel).dial_cluster_stream() as stream,
        ):
            await stream.send_message(opening(session, port, udp=True))
            assert (await first_reply(stream)).code == common.TunnelControlCode.CONNECTED
            for word in (b"one", b"two", b"three"):
                await stream.send_message(common.TunnelMessage(data=word))
                answer = await asyncio.wait_for(stream.recv_message(), DEADLINE)
                assert answer.data == word.upper()
            await stream.send_message(control(common.TunnelControlCode.WRITE_CLOSED))
            await stream.end()
            assert (agent.dialled, own_dials) == (1, [])
    finally:
        echo.close()


async def test_a_refused_destination_is_the_agents_dial_failed(
    channel: Channel, own_dials: list[str]
) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = await client_session(channel)
    async with (
        agents(channel, "egress-a") as (agent,),
        ManagerClient(channel).dial_cluster_stream() as stream,
    ):
        await stream.send_message(opening(session, port))
        reply = await first_reply(stream)
        await stream.end()
        await until(lambda: agent.refused == 1)
    assert reply.code == common.TunnelControlCode.DIAL_FAILED
    assert "refused" in reply.message.lower()
    assert (agent.dialled, own_dials) == (0, [])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_whole_agent_dials_its_flows_and_drops_them_when_it_stops(
    manager_service: ManagerService,
    echo_server: tuple[int, list[tuple[str, int]]],
    own_dials: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(agent_app, "LINGER", 0.1)
    monkeypatch.setattr(agent_app, "DRAIN_TIMEOUT", 0.2)
    port, _ = echo_server
    manager_port = free_port()
    server = await serve_tcp([manager_service], "127.0.0.1", manager_port)
    config = AgentConfig(
        pod_name="egress-a",
        namespace=NAMESPACE,
        pod_ip="127.0.0.1",
        workload_kind="Deployment",
        workload_name=WORKLOAD,
    )
    agent = TrafficAgent(config, "127.0.0.1", manager_port, listen_host="127.0.0.1")
    supervisors: list[Supervisor] = []

    async def main(supervisor: Supervisor) -> None:
        supervisors.append(supervisor)
        await agent.run(supervisor)

    running = asyncio.create_task(supervise(main, grace=5.0, handle_signals=False))
    channel = tcp_channel("127.0.0.1", manager_port)
    try:
        await until(lambda: agent.session is not None and agent.session.session_id is not None)
        session = await client_session(channel)
        assert await echo_via(channel, session, port, b"through the pod") == b"through the pod"
        assert (agent.egress.dialled, own_dials) == (1, [])
        async with ManagerClient(channel).dial_cluster_stream() as stream:
            await stream.send_message(opening(session, port))
            assert (await first_reply(stream)).code == common.TunnelControlCode.CONNECTED
            assert agent.egress.open_flows == 1
            loop = asyncio.get_running_loop()
            stopped = loop.time()
            supervisors[0].request_stop("test over")
            await asyncio.wait_for(running, 10)
            assert loop.time() - stopped < 5.0
            assert agent.egress.open_flows == 0
            # The client's flow ends too: the manager ends its side of the splice.
            ended = await asyncio.wait_for(stream.recv_message(), DEADLINE)
            assert ended is None or (
                ended.control is not None and ended.control.code == common.TunnelControlCode.RESET
            )
            await stream.end()
    finally:
        running.cancel()
        channel.close()
        server.close()
        await server.wait_closed()
