"""Client of the root daemon: userd asks it to bring the cluster network up and down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kubepresence.protocol.errors import Category
from kubepresence.protocol.gen import common, daemon
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.routing import RoutingOptions, VirtualAddress
from kubepresence.protocol.transport import client_errors, unix_channel
from kubepresence.protocol.wire import addresses_from_messages, routing_to_message
from kubepresence.userd.rpc.manager import ClusterNetwork

# Bringing up a TUN device, routes and the resolver takes a moment, not minutes.
NETWORK_TIMEOUT = 30.0
STATUS_TIMEOUT = 3.0  # a local daemon answers a status question at once, or is in trouble


async def connect_network(
    socket: Path,
    *,
    session_id: str,
    cluster_id: str,
    network: ClusterNetwork,
    also_proxy: list[str],
    never_proxy: list[str],
    search_namespaces: list[str],
    connector_socket: Path,
    manager_socket: Path,
    routing: RoutingOptions,
) -> daemon.DaemonStatus:
    channel = unix_channel(socket)
    try:
        stub = daemon.DaemonStub(channel, timeout=NETWORK_TIMEOUT)
        async with client_errors("the root daemon does not answer", Category.INTERNAL):
            return await stub.connect(
                daemon.NetworkConfig(
                    session=common.SessionInfo(session_id=session_id, cluster_id=cluster_id),
                    cluster=common.ClusterInfo(
                        pod_subnets=network.pod_subnets,
                        service_subnets=network.service_subnets,
                        cluster_domain=network.cluster_domain,
                        dns_service_ip=network.dns_service_ip,
                        manager_version=network.manager_version,
                    ),
                    also_proxy=also_proxy,
                    never_proxy=never_proxy,
                    search_namespaces=search_namespaces,
                    connector_socket=str(connector_socket),
                    manager_socket=str(manager_socket),
                    routing=routing_to_message(routing),
                )
            )
    finally:
        channel.close()


async def update_session(socket: Path, session_id: str, cluster_id: str) -> None:
    channel = unix_channel(socket)
    try:
        stub = daemon.DaemonStub(channel, timeout=STATUS_TIMEOUT)
        async with client_errors("the root daemon does not answer", Category.INTERNAL):
            await stub.update_session(
                common.SessionInfo(session_id=session_id, cluster_id=cluster_id)
            )
    finally:
        channel.close()


async def disconnect_network(socket: Path) -> None:
    channel = unix_channel(socket)
    try:
        stub = daemon.DaemonStub(channel, timeout=NETWORK_TIMEOUT)
        async with client_errors("the root daemon does not answer", Category.INTERNAL):
            await stub.disconnect(protobuf.Empty())
    finally:
        channel.close()


async def network_status(socket: Path) -> daemon.DaemonStatus:
    """rootd's view of the cluster network; a KubepresenceError when rootd does not answer."""
    channel = unix_channel(socket)
    try:
        stub = daemon.DaemonStub(channel, timeout=STATUS_TIMEOUT)
        async with client_errors("the root daemon does not answer", Category.INTERNAL):
            return await stub.status(protobuf.Empty())
    finally:
        channel.close()


@dataclass(frozen=True)
class FragmentCounters:
    """rootd's IP reassembly this session, as it last said (shown by `status`)."""

    received: int = 0
    reassembled: int = 0
    sent: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count, non-zero only

    def message(self) -> common.IpFragments:
        return common.IpFragments(
            received=self.received,
            reassembled=self.reassembled,
            sent=self.sent,
            dropped=dict(self.dropped),
        )


def fragment_counters(status: daemon.DaemonStatus) -> FragmentCounters:
    fragments = status.fragments or common.IpFragments()
    return FragmentCounters(
        fragments.received, fragments.reassembled, fragments.sent, dict(fragments.dropped)
    )


def virtual_addresses(status: daemon.DaemonStatus) -> list[VirtualAddress]:
    return addresses_from_messages(list(status.virtual_addresses))
