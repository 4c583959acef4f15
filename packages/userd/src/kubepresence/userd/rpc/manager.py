"""Client of the traffic manager: the user daemon's calls into the cluster.

In production the channel runs over the port-forward to the manager pod; tests hand in a
channel to a unix socket. Every unary call has a deadline; a tunnel flow is a bidi stream
whose liveness the relay's idle timeout bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from grpclib.client import Channel, Stream
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from kubepresence.protocol import streams
from kubepresence.protocol.agents import Agent
from kubepresence.protocol.errors import ClusterError
from kubepresence.protocol.gen import common, manager
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.transport import client_errors
from kubepresence.protocol.wire import agent_from_message

CALL_TIMEOUT = 10.0
DIAL_TIMEOUT = 15.0


@dataclass(frozen=True)
class Dial:
    """The manager's request that we take an inbound connection of one of our intercepts
    (a hand-over): connect to `local_host`:`local_port` and answer dial `dial_id`."""

    dial_id: str  # empty: a keep-alive
    intercept_id: str
    local_host: str
    local_port: int


@dataclass(frozen=True)
class ClusterNetwork:
    """What the manager reports about the cluster's network."""

    pod_subnets: list[str]
    service_subnets: list[str]
    cluster_domain: str
    dns_service_ip: str
    manager_version: str


@dataclass(frozen=True)
class InterceptRequest:
    """An intercept as this session asked the manager for it: asked again, the same way,
    of a manager that forgot it (restarted, or moved to another node)."""

    name: str
    namespace: str
    workload: str
    port: str  # the container port (resolved from the Service port)
    local: tuple[str, int]
    http_filter: common.HttpFilter | None = None  # None: a global intercept
    preview: tuple[str, int, bool] | None = None  # (ingress host, port, TLS) of a preview URL


@dataclass(frozen=True)
class InterceptView:
    """One of our intercepts as the manager reports it."""

    id: str
    name: str
    namespace: str
    workload: str
    port: str
    local_host: str
    local_port: int
    state: str  # "waiting", "active", "no_agent", "error"
    message: str
    environment: dict[str, str]
    http_filter: common.HttpFilter | None = None  # None: a global intercept
    preview_url: str = ""
    pod_ip: str = ""  # the agent that exports the app's volumes (sftp_port 0: none)
    sftp_port: int = 0

    @classmethod
    def of(cls, info: common.InterceptInfo) -> InterceptView:
        spec = info.spec or common.InterceptSpec()
        return cls(
            id=info.id,
            name=spec.name,
            namespace=spec.namespace,
            workload=spec.workload_name,
            port=spec.service_port,
            local_host=spec.local_host,
            local_port=spec.local_port,
            state=common.InterceptState(info.state).name.lower(),
            message=info.message,
            environment=dict(info.environment),
            http_filter=spec.http_filter,
            preview_url=info.preview_url,
            pod_ip=info.pod_ip,
            sftp_port=info.sftp_port,
        )


class SessionGoneError(ClusterError):
    """The manager no longer knows our session (it expired): arrive again."""


@dataclass(frozen=True)
class Destination:
    host: str
    port: int
    protocol: str = "tcp"


class ManagerClient:
    def __init__(self, channel: Channel, timeout: float = CALL_TIMEOUT) -> None:
        self._channel = channel
        self._stub = manager.ManagerStub(channel, timeout=timeout)
        # Watches live as long as the session: no deadline (the stub's None means "default").
        self._watch_stub = manager.ManagerStub(channel)

    async def version(self) -> str:
        async with client_errors("the traffic manager does not answer"):
            info = await self._stub.version(protobuf.Empty())
        return info.version

    async def arrive(self, name: str, install_id: str, version: str) -> tuple[str, str]:
        """Start a client session: (session id, cluster id)."""
        async with client_errors("the traffic manager does not answer"):
            info = await self._stub.arrive_as_client(
                manager.ClientInfo(name=name, install_id=install_id, version=version)
            )
        return info.session_id, info.cluster_id

    async def remain(self, session_id: str) -> None:
        """Keep the session alive; SessionGoneError when the manager forgot it."""
        async with client_errors("the traffic manager does not answer"):
            try:
                await self._stub.remain(common.SessionInfo(session_id=session_id))
            except GRPCError as error:
                if error.status is Status.NOT_FOUND:
                    raise SessionGoneError(error.message or "session expired") from error
                raise

    async def depart(self, session_id: str) -> None:
        async with client_errors("the traffic manager does not answer"):
            await self._stub.depart(common.SessionInfo(session_id=session_id))

    async def cluster_network(self) -> ClusterNetwork:
        async with client_errors("the traffic manager does not answer"):
            info = await self._stub.get_cluster_info(protobuf.Empty())
        return ClusterNetwork(
            pod_subnets=list(info.pod_subnets),
            service_subnets=list(info.service_subnets),
            cluster_domain=info.cluster_domain,
            dns_service_ip=info.dns_service_ip,
            manager_version=info.manager_version,
        )

    @contextlib.asynccontextmanager
    async def dial(
        self, session_id: str, destination: Destination, idle_timeout: float
    ) -> AsyncIterator[Stream[Any, Any]]:
        """Open a flow to `destination` in the cluster; yields the connected tunnel stream.

        Raises ClusterError when the manager cannot dial it (refused, unreachable, timeout).
        """
        connection = common.ConnectionId(
            protocol=common.Protocol.TCP if destination.protocol == "tcp" else common.Protocol.UDP,
            destination_ip=ipaddress.ip_address(destination.host).packed,
            destination_port=destination.port,
        )
        opening = common.TunnelMessage(
            open=common.TunnelOpen(
                session_id=session_id,
                connection=connection,
                idle_timeout=timedelta(seconds=idle_timeout),
            )
        )
        async with (
            client_errors(f"tunnel to {destination.host}:{destination.port}"),
            self.dial_cluster_stream() as stream,
        ):
            await stream.send_message(opening)
            reply = await _first_reply(stream)
            if reply.control is None or reply.control.code != common.TunnelControlCode.CONNECTED:
                reason = reply.control.message if reply.control is not None else "no answer"
                raise ClusterError(
                    f"cannot reach {destination.host}:{destination.port} in the cluster: {reason}"
                )
            yield stream
            # The relay has exchanged WRITE_CLOSED both ways: end our half of the stream.
            await stream.end()

    def dial_cluster_stream(self) -> Any:
        """A raw DialCluster tunnel (async context manager): the caller speaks the flow
        protocol, starting with the open."""
        return streams.dial_cluster(self._channel)

    @contextlib.asynccontextmanager
    async def answer_dial(self, session_id: str, dial_id: str) -> AsyncIterator[Any]:
        """An AnswerDial tunnel claiming `dial_id`, its open sent; yields the stream.

        The manager's refusal (a dial withdrawn while we dialled locally: NOT_FOUND) or a
        lost channel is a KubepresenceError, which ends this connection only."""
        async with (
            client_errors("the traffic manager does not answer"),
            streams.answer_dial(self._channel) as stream,
        ):
            await stream.send_message(
                common.TunnelMessage(open=common.TunnelOpen(session_id=session_id, dial_id=dial_id))
            )
            yield stream

    async def create_intercept(self, session_id: str, request: InterceptRequest) -> InterceptView:
        spec = common.InterceptSpec(
            name=request.name,
            namespace=request.namespace,
            workload_name=request.workload,
            service_port=request.port,
            local_host=request.local[0],
            local_port=request.local[1],
            http_filter=request.http_filter,
        )
        if request.preview is not None:
            (
                spec.preview_ingress_host,
                spec.preview_ingress_port,
                spec.preview_ingress_tls,
            ) = request.preview
        async with client_errors("the traffic manager does not answer"):
            info = await self._stub.create_intercept(
                manager.InterceptRequest(
                    session=common.SessionInfo(session_id=session_id), spec=spec
                )
            )
        return InterceptView.of(info)

    async def remove_intercept(self, session_id: str, name: str) -> None:
        async with client_errors("the traffic manager does not answer"):
            await self._stub.remove_intercept(
                manager.RemoveInterceptRequest(
                    session=common.SessionInfo(session_id=session_id), name=name
                )
            )

    async def watch_intercepts(self, session_id: str) -> AsyncIterator[list[InterceptView]]:
        """Snapshots of this client's intercepts, on every change (and as keep-alive)."""
        async with client_errors("the traffic manager does not answer"):
            async for snapshot in self._watch_stub.watch_intercepts(
                common.SessionInfo(session_id=session_id)
            ):
                yield [InterceptView.of(info) for info in snapshot.intercepts]

    async def set_log_level(self, level: str, seconds: int) -> None:
        """The manager's and its agents' level (`loglevel`); a manager older than this
        call says so (ClusterError: the cluster's manager wants an upgrade)."""
        async with client_errors("the traffic manager does not answer"):
            try:
                await self._stub.set_log_level(
                    common.LogLevelRequest(level=level, duration_seconds=seconds)
                )
            except GRPCError as error:
                if error.status is Status.UNIMPLEMENTED:
                    raise ClusterError(
                        "this traffic manager cannot change its log level at run time: "
                        "'kubepresence helm upgrade' brings one that can"
                    ) from None
                raise

    async def agent_pods(self, session_id: str, namespace: str, workload: str) -> set[str]:
        """The pods of `workload` whose agents are present in the manager now."""
        return {
            a.pod_name
            for a in await self.agents(session_id)
            if (a.namespace, a.workload_name) == (namespace, workload)
        }

    async def agents(self, session_id: str) -> list[Agent]:
        """The agents present in the manager now."""
        snapshots = self._stub.watch_agents(common.SessionInfo(session_id=session_id))
        try:
            async with client_errors("the traffic manager does not answer"):
                snapshot = await anext(snapshots, None)
        finally:
            close = getattr(snapshots, "aclose", None)  # ends the watch's stream now
            if close is not None:
                await close()
        if snapshot is None:
            raise ClusterError("the traffic manager ended the agent watch at once")
        return [agent_from_message(a) for a in snapshot.agents]

    async def watch_dials(self, session_id: str) -> AsyncIterator[Dial]:
        """Inbound connections of our intercepts to take (empty dial ids are keep-alives)."""
        async with client_errors("the traffic manager does not answer"):
            async for dial in self._watch_stub.watch_dials(
                common.SessionInfo(session_id=session_id)
            ):
                yield Dial(dial.dial_id, dial.intercept_id, dial.local_host, dial.local_port)

    async def lookup_dns(self, session_id: str, name: str, qtype: int) -> tuple[int, list[bytes]]:
        async with client_errors("the traffic manager does not answer"):
            reply = await self._stub.lookup_dns(
                common.DnsRequest(session_id=session_id, name=name, qtype=qtype)
            )
        return reply.rcode, list(reply.answers)


async def _first_reply(stream: Stream[Any, Any]) -> common.TunnelMessage:
    async with asyncio.timeout(DIAL_TIMEOUT):
        reply: common.TunnelMessage | None = await stream.recv_message()
    if reply is None:
        raise ClusterError("the traffic manager closed the tunnel before dialling")
    return reply
