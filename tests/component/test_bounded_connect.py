"""Component test: a connection attempt that gets no answer does not hold a channel's calls.

A listening socket whose accept queue is full drops further SYNs, as a pod that went away
does while kube-proxy still sends its Service there. Scenarios:
- a call without a deadline (as an agent's watch) on `tcp_channel` fails within the
  connect bound instead of the kernel's two minutes of SYN retries, so the calls behind
  it get their turn;
- grpclib's plain Channel would still be waiting (the bug the bound fixes);
- once something answers, the same channel connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import pytest
from grpclib.client import Channel

from kubepresence.manager.rpc.manager import ManagerService
from kubepresence.protocol.transport import CONFIGURATION, serve_tcp, tcp_channel
from kubepresence.userd.rpc.manager import ManagerClient

BOUND = 0.5
GUARD = 5.0  # far above BOUND, far below the kernel's SYN retries


@contextlib.contextmanager
def unanswering_port() -> Iterator[int]:
    """A port on 127.0.0.1 that drops SYNs: listening, never accepting, queue full."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port))
    try:
        yield port
    finally:
        queued.close()
        server.close()


async def connect_once(channel: Channel) -> str:
    """'bounded' when the channel gave up by itself, 'waiting' when only GUARD ended it."""
    try:
        async with asyncio.timeout(GUARD) as guard:
            await channel.__connect__()
    except TimeoutError:
        return "waiting" if guard.expired() else "bounded"
    return "connected"


@pytest.mark.timeout(30)  # the bound it checks is 5 s
async def test_an_unanswered_connect_is_bounded() -> None:
    with unanswering_port() as port:
        bounded = tcp_channel("127.0.0.1", port, connect_timeout=BOUND)
        plain = Channel("127.0.0.1", port, config=CONFIGURATION)
        try:
            outcomes = await asyncio.gather(connect_once(bounded), connect_once(plain))
        finally:
            bounded.close()
            plain.close()
    assert list(outcomes) == ["bounded", "waiting"]


async def test_the_channel_connects_once_something_answers(
    manager_service: ManagerService,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = tcp_channel("127.0.0.1", port, connect_timeout=BOUND)
    with pytest.raises(ConnectionRefusedError):  # nothing there yet: refused at once
        await channel.__connect__()
    server = await serve_tcp([manager_service], "127.0.0.1", port)
    try:
        assert (await ManagerClient(channel).version()).count(".") >= 2
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
