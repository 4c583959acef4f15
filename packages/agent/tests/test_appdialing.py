"""appdialing: the agent reaches the app where it listens (loopback or the pod's IP).

Scenarios, with real sockets on the loopback range (127.0.0.2 stands for the pod's IP):
- an app on 127.0.0.1 is dialed there; one bound only to the pod's IP is found there
  after loopback refuses, and that address is remembered for the next connection;
- nothing listening anywhere: the refusal reaches the caller;
- the order of candidate addresses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kubepresence.agent.net.appdialing import LOOPBACK, AppDialer, candidates

POD_IP = "127.0.0.2"


@pytest.fixture
async def app_on_pod_ip() -> AsyncIterator[int]:
    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from the pod ip")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hello, POD_IP, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port


async def test_an_app_bound_to_the_pod_ip_is_found_and_remembered(app_on_pod_ip: int) -> None:
    dialer = AppDialer(POD_IP)
    assert dialer.address_of(app_on_pod_ip) == LOOPBACK
    for _ in range(2):
        reader, writer = await dialer.open(app_on_pod_ip)
        assert await reader.read() == b"hello from the pod ip"
        writer.close()
        assert dialer.address_of(app_on_pod_ip) == POD_IP


async def test_an_app_on_loopback_is_dialed_there() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await AppDialer(POD_IP).open(port)
        assert writer.get_extra_info("peername")[0] == LOOPBACK
        writer.close()


async def test_nothing_listening_is_refused(app_on_pod_ip: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        await AppDialer("").open(app_on_pod_ip)  # only loopback known: refused there


def test_candidates() -> None:
    assert candidates("10.244.0.5", None) == [LOOPBACK, "10.244.0.5"]
    assert candidates("10.244.0.5", "10.244.0.5") == ["10.244.0.5", LOOPBACK]
    assert candidates("", None) == [LOOPBACK]
