"""The Daemon service the user daemon talks to."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kubepresence.protocol import version_of
from kubepresence.protocol.errors import UserError
from kubepresence.protocol.gen import common, daemon
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.logs import set_level_for
from kubepresence.protocol.routing import VirtualAddress
from kubepresence.protocol.wire import (
    addresses_to_messages,
    routing_from_message,
    routing_to_message,
)
from kubepresence.rootd.core.network import NetworkRequest

if TYPE_CHECKING:
    from kubepresence.rootd.app import RootDaemon
    from kubepresence.rootd.vif import VifStatus

log = logging.getLogger(__name__)


def network_request(message: daemon.NetworkConfig) -> NetworkRequest:
    cluster = message.cluster or common.ClusterInfo()
    session = message.session or common.SessionInfo()
    return NetworkRequest(
        session_id=session.session_id,
        pod_subnets=list(cluster.pod_subnets),
        service_subnets=list(cluster.service_subnets),
        cluster_domain=cluster.cluster_domain,
        dns_service_ip=cluster.dns_service_ip,
        also_proxy=list(message.also_proxy),
        never_proxy=list(message.never_proxy),
        search_namespaces=list(message.search_namespaces),
        connector_socket=message.connector_socket,
        manager_socket=message.manager_socket,
        routing=routing_from_message(message.routing),
    )


def daemon_status(status: VifStatus) -> daemon.DaemonStatus:
    return daemon.DaemonStatus(
        connected=status.connected,
        vif_name=status.vif_name,
        routed_subnets=list(status.routed_subnets),
        dns_address=status.dns_address,
        open_flows=status.open_flows,
        fragments=common.IpFragments(
            received=status.fragments_received,
            reassembled=status.datagrams_reassembled,
            sent=status.fragments_sent,
            dropped=dict(status.fragments_dropped),
        ),
        resolver=status.resolver,
        routing=routing_to_message(status.routing) if status.connected else None,
        virtual_addresses=addresses_to_messages(
            [VirtualAddress(*entry) for entry in status.virtual_addresses]
        ),
    )


class DaemonService(daemon.DaemonBase):
    def __init__(self, root: RootDaemon, supervisor: Supervisor) -> None:
        self._root = root
        self._supervisor = supervisor

    async def version(self, message: protobuf.Empty) -> common.VersionInfo:
        return common.VersionInfo(name="rootd", version=version_of("kubepresence-rootd"))

    async def connect(self, message: daemon.NetworkConfig) -> daemon.DaemonStatus:
        return daemon_status(await self._root.connect(network_request(message)))

    async def update_session(self, message: common.SessionInfo) -> protobuf.Empty:
        self._root.update_session(message.session_id)
        return protobuf.Empty()

    async def disconnect(self, message: protobuf.Empty) -> protobuf.Empty:
        # Idempotent: userd disconnects on quit whether or not the VIF is up.
        await self._root.disconnect("disconnect requested by userd")
        return protobuf.Empty()

    async def status(self, message: protobuf.Empty) -> daemon.DaemonStatus:
        return daemon_status(self._root.status())

    async def set_log_level(self, message: common.LogLevelRequest) -> protobuf.Empty:
        try:
            set_level_for(message.level, message.duration_seconds)
        except ValueError as error:
            raise UserError(str(error)) from error
        log.info("log level set to %s", message.level)
        return protobuf.Empty()

    async def quit(self, message: protobuf.Empty) -> protobuf.Empty:
        self._supervisor.request_stop_after_reply("quit requested by userd")
        return protobuf.Empty()
