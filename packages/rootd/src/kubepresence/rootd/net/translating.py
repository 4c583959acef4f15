"""Flows to virtual addresses, dialled in the cluster to the addresses they stand for.

The relay's `Cluster` for a session with `--vnat` or `--proxy-via`: a flow to the virtual
subnet opens its tunnel to the cluster address the virtual one was handed out for (and,
for proxy-via, from an agent of the workload); a flow to a virtual address no DNS answer
handed out is refused at once, like a dial nobody answers. Other flows pass unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.vnat import VirtualNetwork
from kubepresence.rootd.net.relaying import Tunnel, TunnelEvent, TunnelEventKind
from kubepresence.rootd.rpc.manager import ManagerTunnels


class _RefusedTunnel:
    """A tunnel whose far end refused at once (nothing is sent anywhere)."""

    def __init__(self, reason: str) -> None:
        self._events = [TunnelEvent(TunnelEventKind.DIAL_FAILED, message=reason)]

    async def receive(self) -> TunnelEvent:
        return self._events.pop() if self._events else TunnelEvent(TunnelEventKind.END)

    async def send_data(self, data: bytes) -> None:
        return None

    async def send_write_closed(self) -> None:
        return None

    async def send_reset(self, reason: str) -> None:
        return None

    async def end(self) -> None:
        return None


class TranslatedCluster:
    def __init__(self, client: ManagerTunnels, virtual: VirtualNetwork) -> None:
        self._client = client
        self._virtual = virtual

    @contextlib.asynccontextmanager
    async def tunnel(self, flow: FlowId) -> AsyncIterator[Tunnel]:
        address = flow.destination
        if address.version != self._virtual.subnet.version or address not in self._virtual.subnet:
            async with self._client.tunnel(flow) as tunnel:
                yield tunnel
            return
        destination = self._virtual.destination_of(address)
        if destination is None:
            yield _RefusedTunnel(f"{address} is a virtual address no DNS answer handed out")
            return
        async with self._client.tunnel(flow, destination) as tunnel:
            yield tunnel
