"""The manager's flow streams: each tunnel RPC takes only the open that fits it.

Scenarios:
- DialCluster takes a client's flow (TCP or UDP, maybe via a workload named in full) and
  refuses an open naming a dial or an intercept;
- HandOver takes an agent's intercepted connection (its intercept) and refuses a dial id
  or a via workload;
- AnswerDial takes the answer to a posted dial (its dial id) and refuses an intercept or
  a via workload;
- over a real server, an open on the wrong RPC is refused with INVALID_ARGUMENT naming
  the RPC and the field, before anything is dialled or posted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from kubepresence.manager.core.sessions import SessionRegistry
from kubepresence.manager.k8s.discovery import ClusterNetwork
from kubepresence.manager.rpc.manager import (
    ANSWER_DIAL,
    DIAL_CLUSTER,
    HAND_OVER,
    ManagerService,
    misfit,
)
from kubepresence.protocol import streams
from kubepresence.protocol.gen import common
from kubepresence.protocol.transport import serve_unix, unix_channel

NETWORK = ClusterNetwork(
    pod_subnets=["10.244.0.0/16"],
    service_subnets=["10.96.0.0/16"],
    cluster_domain="cluster.local",
    dns_service_ip="10.96.0.10",
    cluster_id="test-cluster",
)
TCP = common.ConnectionId(
    protocol=common.Protocol.TCP, destination_ip=bytes([10, 96, 0, 20]), destination_port=80
)


def opened(**fields: object) -> common.TunnelOpen:
    return common.TunnelOpen(session_id="s", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rpc", "open_"),
    [
        (DIAL_CLUSTER, opened(connection=TCP)),
        (
            DIAL_CLUSTER,
            opened(
                connection=common.ConnectionId(protocol=common.Protocol.UDP, destination_port=53)
            ),
        ),
        (DIAL_CLUSTER, opened(connection=TCP, via_namespace="shop", via_workload="egress")),
        (HAND_OVER, opened(intercept_id="i-1", connection=TCP)),
        (ANSWER_DIAL, opened(dial_id="d-1")),
        (ANSWER_DIAL, opened(dial_id="d-1", connection=TCP)),  # an agent's egress answer
    ],
)
def test_fitting_opens_pass(rpc: str, open_: common.TunnelOpen) -> None:
    assert misfit(rpc, open_) is None


@pytest.mark.parametrize(
    ("rpc", "open_", "reason"),
    [
        (DIAL_CLUSTER, opened(connection=TCP, dial_id="d-1"), "names no dial_id"),
        (DIAL_CLUSTER, opened(connection=TCP, intercept_id="i-1"), "no dial_id or intercept_id"),
        (DIAL_CLUSTER, opened(), "names the connection"),
        (DIAL_CLUSTER, opened(connection=common.ConnectionId(destination_port=80)), "TCP or UDP"),
        (DIAL_CLUSTER, opened(connection=TCP, via_workload="egress"), "namespace and name"),
        (HAND_OVER, opened(connection=TCP), "names its intercept_id"),
        (HAND_OVER, opened(intercept_id="i-1", dial_id="d-1"), "no dial_id"),
        (HAND_OVER, opened(intercept_id="i-1", via_namespace="shop"), "via_workload"),
        (ANSWER_DIAL, opened(), "names its dial_id"),
        (ANSWER_DIAL, opened(dial_id="d-1", intercept_id="i-1"), "no intercept_id"),
        (ANSWER_DIAL, opened(dial_id="d-1", via_workload="egress"), "via_workload"),
    ],
)
def test_misfitting_opens_say_why(rpc: str, open_: common.TunnelOpen, reason: str) -> None:
    problem = misfit(rpc, open_)
    assert problem is not None
    assert reason in problem


def test_an_unknown_rpc_is_a_bug() -> None:
    with pytest.raises(ValueError, match="no tunnel RPC"):
        misfit("Tunnel", opened(connection=TCP))


@pytest.fixture
async def channel(tmp_path: Path) -> AsyncIterator[Channel]:
    service = ManagerService(
        sessions=SessionRegistry(ttl=30), network=NETWORK, dial_timeout=2.0, idle_timeout=30.0
    )
    path = tmp_path / "manager.socket"
    server = await serve_unix([service], path)
    channel = unix_channel(path)
    yield channel
    channel.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    ("opener", "open_", "words"),
    [
        (streams.dial_cluster, opened(connection=TCP, dial_id="d-1"), "DialCluster: a Dial"),
        (streams.hand_over, opened(dial_id="d-1"), "HandOver: a HandOver open names its"),
        (streams.answer_dial, opened(intercept_id="i-1"), "AnswerDial: an AnswerDial open"),
        (streams.answer_dial, None, "AnswerDial: a tunnel starts with an open message"),
    ],
)
async def test_the_server_refuses_an_open_on_the_wrong_rpc(
    channel: Channel, opener: object, open_: common.TunnelOpen | None, words: str
) -> None:
    assert callable(opener)
    first = common.TunnelMessage(open=open_) if open_ else common.TunnelMessage(data=b"x")

    async def send_first() -> None:
        async with opener(channel) as stream:
            await stream.send_message(first)
            # The refusal comes as trailers only; the stream is reset after them.
            with contextlib.suppress(StreamTerminatedError):
                await stream.recv_message()

    with pytest.raises(GRPCError) as caught:
        await send_first()
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert words in (caught.value.message or "")
