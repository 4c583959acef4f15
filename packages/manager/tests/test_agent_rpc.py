"""ArriveAsAgent and WatchAgents over a real grpclib server on a unix socket.

Scenarios:
- a client watching sees an agent arrive (ports, workload, environment as sent), a second
  arrival of the same pod replaces the first, and a departure empties the snapshot;
- an expired agent session leaves the watch (the expiry loop's `forget_sessions`);
- a watch without a session is refused with NOT_FOUND, and ends when the watcher's
  session ends;
- an agent that names no pod is refused as bad input;
- a terminating pod's agent (told by the pod watch) leaves the watch at once, its session
  ends, and it may not arrive again until the pod is deleted;
- changed pod subnets (told by the node watch) reach later GetClusterInfo callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from kubepresence.manager.core.sessions import SessionRegistry
from kubepresence.manager.k8s.discovery import ClusterNetwork
from kubepresence.manager.rpc import manager as manager_rpc
from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol.gen import common
from kubepresence.protocol.gen.google.protobuf import Empty
from kubepresence.protocol.gen.manager import AgentSnapshot, ClientInfo, ManagerStub
from kubepresence.protocol.transport import serve_unix, unix_channel

NETWORK = ClusterNetwork(
    pod_subnets=["10.244.0.0/16"],
    service_subnets=["10.96.0.0/16"],
    cluster_domain="cluster.local",
    dns_service_ip="10.96.0.10",
    cluster_id="test-cluster",
)


def agent_info(pod: str, ip: str = "10.244.0.7") -> common.AgentInfo:
    return common.AgentInfo(
        pod_name=pod,
        namespace="shop",
        pod_ip=ip,
        workload_name="echo",
        workload_kind=common.WorkloadKind.DEPLOYMENT,
        container="echo",
        ports=[
            common.ContainerPort(
                name="http", port=8080, protocol=common.Protocol.TCP, agent_port=9900
            ),
            common.ContainerPort(
                port=9000, protocol=common.Protocol.TCP, agent_port=9901, redirected=True
            ),
        ],
        environment={"GREETING": "hello"},
        version="0.1.0",
    )


class Manager:
    def __init__(self, service: ManagerService, sessions: SessionRegistry, channel: Channel):
        self.service = service
        self.sessions = sessions
        self.stub = ManagerStub(channel, timeout=5)


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[Manager]:
    sessions = SessionRegistry(ttl=30)
    service = ManagerService(
        sessions=sessions, network=NETWORK, dial_timeout=2.0, idle_timeout=30.0
    )
    path = tmp_path / "manager.socket"
    server = await serve_unix([service], path)
    channel = unix_channel(path)
    yield Manager(service, sessions, channel)
    channel.close()
    server.close()
    await server.wait_closed()


async def next_snapshot(watch: AsyncIterator[AgentSnapshot]) -> list[common.AgentInfo]:
    snapshot = await asyncio.wait_for(anext(watch), 5)
    return list(snapshot.agents)


async def test_watch_follows_arrivals_replacements_and_departures(manager: Manager) -> None:
    client = await manager.stub.arrive_as_client(ClientInfo(name="dev@laptop", version="0"))
    watch = manager.stub.watch_agents(client).__aiter__()
    assert await next_snapshot(watch) == []

    first = await manager.stub.arrive_as_agent(agent_info("echo-1", ip="10.244.0.7"))
    assert first.session_id.startswith("agent-")
    assert first.cluster_id == "test-cluster"
    [seen] = await next_snapshot(watch)
    assert seen == agent_info("echo-1", ip="10.244.0.7")

    second = await manager.stub.arrive_as_agent(agent_info("echo-1", ip="10.244.0.8"))
    [seen] = await next_snapshot(watch)
    assert seen.pod_ip == "10.244.0.8"
    # The replaced session is gone from the registry too.
    with pytest.raises(GRPCError) as caught:
        await manager.stub.remain(first)
    assert caught.value.status == Status.NOT_FOUND

    await manager.stub.remain(second)
    await manager.stub.depart(second)
    assert await next_snapshot(watch) == []
    await watch.aclose()  # type: ignore[attr-defined]


async def test_expired_agents_leave_the_watch(manager: Manager) -> None:
    client = await manager.stub.arrive_as_client(ClientInfo(name="dev@laptop"))
    agent = await manager.stub.arrive_as_agent(agent_info("echo-2"))
    watch = manager.stub.watch_agents(client).__aiter__()
    assert [a.pod_name for a in await next_snapshot(watch)] == ["echo-2"]
    # What the manager's expiry loop does for an agent session past its TTL.
    manager.sessions.depart(agent.session_id)
    manager.service.forget_sessions([agent.session_id])
    assert await next_snapshot(watch) == []
    await watch.aclose()  # type: ignore[attr-defined]


async def test_watch_keeps_alive_and_ends_with_its_session(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_rpc, "WATCH_KEEPALIVE", 0.2)
    client = await manager.stub.arrive_as_client(ClientInfo(name="dev@laptop"))
    watch = manager.stub.watch_agents(client).__aiter__()
    assert await next_snapshot(watch) == []
    assert await next_snapshot(watch) == []  # a keep-alive: the same, unchanged snapshot
    await manager.stub.depart(client)

    async def until_the_end() -> None:
        while True:
            await next_snapshot(watch)

    with pytest.raises(GRPCError) as caught:
        await until_the_end()
    assert caught.value.status == Status.NOT_FOUND


async def test_watch_needs_a_session(manager: Manager) -> None:
    with pytest.raises(GRPCError) as caught:
        async for _ in manager.stub.watch_agents(common.SessionInfo(session_id="nope")):
            pass
    assert caught.value.status == Status.NOT_FOUND
    assert "arrive again" in (caught.value.message or "")


async def test_agent_without_pod_is_refused(manager: Manager) -> None:
    with pytest.raises(GRPCError) as caught:
        await manager.stub.arrive_as_agent(common.AgentInfo(namespace="shop"))
    assert caught.value.status == Status.INVALID_ARGUMENT


async def test_a_terminating_pods_agent_leaves_at_once_and_may_not_return(
    manager: Manager,
) -> None:
    client = await manager.stub.arrive_as_client(ClientInfo(name="dev@laptop"))
    agent = await manager.stub.arrive_as_agent(agent_info("echo-3"))
    await manager.stub.arrive_as_agent(agent_info("echo-4"))
    watch = manager.stub.watch_agents(client).__aiter__()
    assert [a.pod_name for a in await next_snapshot(watch)] == ["echo-3", "echo-4"]
    # What the pod watch does when echo-3's deletionTimestamp is set.
    manager.service.pod_ended("shop", "echo-3", deleted=False)
    assert [a.pod_name for a in await next_snapshot(watch)] == ["echo-4"]
    # Its session ended with it: the agent's next Remain is told to arrive again …
    with pytest.raises(GRPCError) as caught:
        await manager.stub.remain(agent)
    assert caught.value.status == Status.NOT_FOUND
    # … and arriving again is refused while the pod terminates.
    with pytest.raises(GRPCError) as caught:
        await manager.stub.arrive_as_agent(agent_info("echo-3"))
    assert caught.value.status == Status.INVALID_ARGUMENT
    assert "terminating" in (caught.value.message or "")
    # Deleted: the name is free again (a StatefulSet's next pod may carry it).
    manager.service.pod_ended("shop", "echo-3", deleted=True)
    await manager.stub.arrive_as_agent(agent_info("echo-3"))
    assert [a.pod_name for a in await next_snapshot(watch)] == ["echo-3", "echo-4"]
    # A pod without an agent here changes nothing.
    manager.service.pod_ended("shop", "unknown", deleted=True)
    await watch.aclose()  # type: ignore[attr-defined]


async def test_changed_pod_subnets_reach_later_callers(manager: Manager) -> None:
    assert (await manager.stub.get_cluster_info(Empty())).pod_subnets == ["10.244.0.0/16"]
    manager.service.pod_subnets_changed(["10.244.0.0/16", "10.245.0.0/24"])
    info = await manager.stub.get_cluster_info(Empty())
    assert info.pod_subnets == ["10.244.0.0/16", "10.245.0.0/24"]
    assert info.service_subnets == ["10.96.0.0/16"]  # the rest stays
    manager.service.pod_subnets_changed([])  # no node with a podCIDR: keep the last
    assert (await manager.stub.get_cluster_info(Empty())).pod_subnets == [
        "10.244.0.0/16",
        "10.245.0.0/24",
    ]
