"""The Connector service the CLI talks to."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpclib.const
from grpclib.server import Stream

from kubepresence.protocol import paths, streams, version_of, wire
from kubepresence.protocol.errors import ConfigError, KubepresenceError, UserError
from kubepresence.protocol.gen import common, connector
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.logs import set_level_for
from kubepresence.userd import engaging
from kubepresence.userd.connecting import ClusterConnection, ConnectOptions
from kubepresence.userd.core.manifests import install_from_environment
from kubepresence.userd.core.session import Phase
from kubepresence.userd.k8s import agents, logs, namespaces
from kubepresence.userd.k8s.portforward import port_forward_protocol
from kubepresence.userd.mounting import Mounts
from kubepresence.userd.rpc.manager import InterceptRequest, InterceptView

if TYPE_CHECKING:
    from kubepresence.userd.app import UserDaemon

log = logging.getLogger(__name__)

_STATE = {
    Phase.DISCONNECTED: connector.ConnectState.DISCONNECTED,
    Phase.CONNECTING: connector.ConnectState.CONNECTING,
    Phase.CONNECTED: connector.ConnectState.CONNECTED,
}


class ConnectorService(connector.ConnectorBase):
    def __init__(self, daemon: UserDaemon, supervisor: Supervisor) -> None:
        self._daemon = daemon
        self._supervisor = supervisor
        # intercept id → what its creation waits for now (status shows it; the CLI polls)
        self._progress: dict[str, str] = {}

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()
        # Connect streams progress while the work runs: serve it on the raw stream.
        mapping[streams.CONNECT_PATH] = streams.connect_handler(self._connect)
        mapping[streams.MANAGE_TRAFFIC_MANAGER_PATH] = streams.manage_traffic_manager_handler(
            self._manage_traffic_manager
        )
        return mapping

    @property
    def _mounts(self) -> Mounts:
        return self._daemon.mounts

    def _connection(self) -> ClusterConnection:
        connection = self._daemon.connection
        if connection is None:
            raise ConfigError("not connected: run 'kubepresence connect'")
        return connection

    async def create_intercept(
        self, message: connector.CreateInterceptRequest
    ) -> common.InterceptInfo:
        connection = self._connection()
        spec = message.spec or common.InterceptSpec()
        if not spec.workload_name:
            raise UserError("name the workload to intercept")
        want = engaging.Engagement(
            request=InterceptRequest(
                name=spec.name or spec.workload_name,
                namespace=spec.namespace or connection.target.namespace,
                workload=spec.workload_name,
                port="",  # resolved from service_port
                local=(spec.local_host or "127.0.0.1", spec.local_port),
                http_filter=spec.http_filter,
                preview=(
                    (
                        spec.preview_ingress_host,
                        spec.preview_ingress_port,
                        spec.preview_ingress_tls,
                    )
                    if spec.preview_ingress_host
                    else None
                ),
            ),
            service_port=spec.service_port,
            service_name=spec.service_name,
            share_local_port=message.share_local_port,
            mount_volumes=spec.mount_volumes,
            mount_point=message.mount_point,
        )
        engaged = await engaging.engage(connection, self._mounts, want, self._progress)
        info = _intercept_info(engaged.view)
        assert info.spec is not None
        info.spec.service_name = engaged.service
        info.message = engaged.note
        if want.mount_volumes:
            info.mount_point, info.mount_error = engaged.mount_point, engaged.mount_error
        return info

    async def remove_intercept(self, message: connector.RemoveInterceptRequest) -> protobuf.Empty:
        connection = self._connection()
        connection.wanted.pop(message.name, None)
        lost = connection.lost.pop(message.name, None)
        await self._mounts.unmount(message.name)
        if lost is not None:
            raise UserError(
                f"intercept {message.name} was already gone: when the traffic manager restarted"
                f" it could not be made again ({lost})"
            )
        await connection.manager.remove_intercept(connection.session_id, message.name)
        return protobuf.Empty()

    async def list(self, message: connector.ListRequest) -> connector.WorkloadList:
        connection = self._connection()
        namespace = message.namespace or connection.target.namespace
        workloads = []
        found = await agents.list_workloads(connection.api, namespace)
        if not found:  # none, or no such namespace: say which
            await namespaces.require(connection.api, [namespace], connection.target.context)
        for kind, name, injected in found:
            intercepts = [
                _intercept_info(i, self._mounts)
                for i in connection.intercepts
                if (i.namespace, i.workload) == (namespace, name)
            ]
            if message.only_intercepted and not intercepts:
                continue
            workloads.append(
                connector.WorkloadInfo(
                    name=name,
                    namespace=namespace,
                    kind=common.WorkloadKind[kind.upper()],
                    agent_installed=injected,
                    intercepts=intercepts,
                )
            )
        return connector.WorkloadList(workloads=workloads)

    async def gather_logs(
        self, message: connector.GatherLogsRequest
    ) -> connector.GatherLogsResponse:
        if not message.destination:
            raise UserError("name the archive to write")
        connection = self._daemon.connection
        local = sorted(paths.state_dir().glob("*.log"))
        files = await logs.gather(
            connection.api if connection is not None else None,
            local,
            connection.options.manager_namespace if connection is not None else "",
            [connection.target.namespace, *connection.options.mapped_namespaces]
            if connection is not None
            else [],
            Path(message.destination),
        )
        return connector.GatherLogsResponse(files=files)

    async def _manage_traffic_manager(self, stream: Stream[Any, Any]) -> None:
        request: connector.TrafficManagerRequest | None = await stream.recv_message()
        assert request is not None
        steps: asyncio.Queue[str] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as group:
                work = group.create_task(
                    self._daemon.manage_traffic_manager(
                        action=connector.TrafficManagerAction(request.action).name.lower(),
                        kubeconfig=request.kubeconfig,
                        environment=dict(request.environment),
                        context=request.context,
                        namespace=request.manager_namespace or "kubepresence",
                        progress=steps.put_nowait,
                    ),
                    name="traffic-manager",
                )
                await _stream_steps(
                    group, work, steps, lambda s: connector.Progress(step=s), stream
                )
        except* KubepresenceError as failed:
            raise failed.exceptions[0] from None
        await stream.send_message(connector.Progress(result=work.result()))

    async def uninstall(self, message: connector.UninstallRequest) -> protobuf.Empty:
        connection = self._connection()
        namespace = message.namespace or connection.target.namespace
        if message.all_agents:
            removed = await agents.remove_all_agents(connection.api, namespace)
            connection.note(f"agents removed in {namespace}: {', '.join(removed) or 'none'}")
        for workload in message.workloads:
            if not await agents.remove_agent(connection.api, namespace, workload):
                raise UserError(f"{namespace}/{workload} has no traffic agent")
            connection.note(f"agent removed from {namespace}/{workload}")
        return protobuf.Empty()

    async def lookup_dns(self, message: common.DnsRequest) -> common.DnsResponse:
        connection = self._connection()
        rcode, answers = await connection.manager.lookup_dns(
            connection.session_id, message.name, message.qtype
        )
        return common.DnsResponse(rcode=rcode, answers=answers)

    async def version(self, message: protobuf.Empty) -> common.VersionInfo:
        return common.VersionInfo(name="userd", version=version_of("kubepresence-userd"))

    async def status(self, message: protobuf.Empty) -> connector.ConnectInfo:
        return self._info()

    def _info(self) -> connector.ConnectInfo:
        state = self._daemon.state
        info = connector.ConnectInfo(
            state=_STATE[state.phase], context=state.context, namespace=state.namespace
        )
        conn = self._daemon.connection
        if conn is not None:
            info.cluster_server = conn.target.server
            info.manager_namespace = conn.options.manager_namespace
            info.session = common.SessionInfo(
                session_id=conn.session_id, cluster_id=conn.cluster_id
            )
            if conn.network is not None:
                info.cluster = common.ClusterInfo(
                    pod_subnets=conn.network.pod_subnets,
                    service_subnets=conn.network.service_subnets,
                    cluster_domain=conn.network.cluster_domain,
                    dns_service_ip=conn.network.dns_service_ip,
                    manager_version=conn.network.manager_version,
                )
            info.events = list(conn.events)
            info.vif_name = conn.vif_name
            info.network_problem = conn.network_problem
            info.open_flows = conn.open_flows
            info.inbound = conn.agent_dials.summary() if conn.agent_dials is not None else ""
            info.fragments = conn.fragments.message()
            info.resolver = conn.resolver
            info.routing = wire.routing_to_message(conn.options.routing)
            info.virtual_addresses = wire.addresses_to_messages(conn.virtual_addresses)
            info.intercepts = [_intercept_info(i, self._mounts) for i in conn.intercepts]
            for intercept in info.intercepts:
                if intercept.id in self._progress:
                    intercept.message = self._progress[intercept.id]
        return info

    async def _connect(self, stream: Stream[Any, Any]) -> None:
        request: connector.ConnectRequest | None = await stream.recv_message()
        assert request is not None  # grpclib delivers the one request of a unary-stream call
        steps: asyncio.Queue[str] = asyncio.Queue()
        try:
            # If the CLI goes away, the group cancels the connect, which undoes itself.
            async with asyncio.TaskGroup() as group:
                work = group.create_task(
                    self._run_connect(request, steps.put_nowait), name="connect"
                )
                await _stream_steps(
                    group, work, steps, lambda s: connector.ConnectProgress(step=s), stream
                )
        except* KubepresenceError as failed:
            raise failed.exceptions[0] from None
        await stream.send_message(connector.ConnectProgress(done=self._info()))

    async def _run_connect(
        self, request: connector.ConnectRequest, progress: Any
    ) -> ClusterConnection:
        return await self._daemon.connect(
            kubeconfig=request.kubeconfig,
            environment=dict(request.environment),
            context=request.context,
            namespace=request.namespace,
            options=ConnectOptions(
                manager_namespace=request.manager_namespace or "kubepresence",
                mapped_namespaces=list(request.mapped_namespaces),
                also_proxy=list(request.also_proxy),
                never_proxy=list(request.never_proxy),
                no_install=request.no_install,
                port_forward=port_forward_protocol(request.environment),
                install=install_from_environment(
                    request.manager_namespace or "kubepresence", request.environment
                ),
                routing=wire.routing_from_message(request.routing),
            ),
            progress=progress,
        )

    async def disconnect(self, message: protobuf.Empty) -> protobuf.Empty:
        if not await self._daemon.disconnect():
            raise UserError("not connected")
        return protobuf.Empty()

    async def set_log_level(self, message: common.LogLevelRequest) -> protobuf.Empty:
        try:
            set_level_for(message.level, message.duration_seconds)
        except ValueError as error:
            raise UserError(str(error)) from error
        log.info("log level set to %s", message.level)
        return protobuf.Empty()

    async def set_cluster_log_level(self, message: common.LogLevelRequest) -> protobuf.Empty:
        connection = self._connection()
        await connection.manager.set_log_level(message.level, message.duration_seconds)
        return protobuf.Empty()

    async def quit(self, message: protobuf.Empty) -> protobuf.Empty:
        self._supervisor.request_stop_after_reply("quit requested by the CLI")
        return protobuf.Empty()


async def _stream_steps(
    group: asyncio.TaskGroup,
    work: asyncio.Task[Any],
    steps: asyncio.Queue[str],
    message: Callable[[str], Any],
    stream: Stream[Any, Any],
) -> None:
    """Send each step `work` reports while it runs, and those left when it is done."""
    while not work.done():
        getter = group.create_task(steps.get(), name="progress")
        await asyncio.wait({work, getter}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            await stream.send_message(message(getter.result()))
        else:
            getter.cancel()  # the item, if any, stays queued
    while not steps.empty():
        await stream.send_message(message(steps.get_nowait()))


def _intercept_info(view: InterceptView, mounts: Mounts | None = None) -> common.InterceptInfo:
    mount = mounts.get(view.name) if mounts is not None else None
    return common.InterceptInfo(
        id=view.id,
        spec=common.InterceptSpec(
            name=view.name,
            namespace=view.namespace,
            workload_name=view.workload,
            service_port=view.port,
            local_host=view.local_host,
            local_port=view.local_port,
            http_filter=view.http_filter,
        ),
        state=common.InterceptState[view.state.upper()],
        preview_url=view.preview_url,
        message=view.message,
        environment=view.environment,
        pod_ip=view.pod_ip,
        sftp_port=view.sftp_port,
        mount_point=str(mount.point.path) if mount is not None else "",
    )
