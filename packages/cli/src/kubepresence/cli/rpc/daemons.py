"""Talking to the local daemons over their unix sockets, with deadlines."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubepresence.cli.core import views
from kubepresence.cli.core.interceptflags import MountRequest, PreviewOptions
from kubepresence.protocol import wire
from kubepresence.protocol.errors import Category, KubepresenceError
from kubepresence.protocol.gen import common, connector, daemon
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.httpfilter import HttpFilter
from kubepresence.protocol.jsonserving import message_dict
from kubepresence.protocol.routing import RoutingOptions
from kubepresence.protocol.transport import client_errors, unix_channel
from kubepresence.protocol.wire import filter_to_message

# Local daemons answer at once or not at all.
LOCAL_TIMEOUT = 5.0


@dataclass(frozen=True)
class UserdStatus:
    version: str
    state: str
    context: str
    namespace: str


@contextlib.asynccontextmanager
async def _userd(
    socket: Path, deadline_seconds: float = LOCAL_TIMEOUT
) -> AsyncIterator[connector.ConnectorStub]:
    """A Connector stub on userd's socket; failures become one-line errors."""
    channel = unix_channel(socket)
    try:
        async with client_errors("the user daemon does not answer", Category.INTERNAL):
            yield connector.ConnectorStub(channel, timeout=deadline_seconds)
    finally:
        channel.close()


@contextlib.asynccontextmanager
async def _rootd(
    socket: Path, deadline_seconds: float = LOCAL_TIMEOUT
) -> AsyncIterator[daemon.DaemonStub]:
    channel = unix_channel(socket)
    try:
        async with client_errors("the root daemon does not answer", Category.INTERNAL):
            yield daemon.DaemonStub(channel, timeout=deadline_seconds)
    finally:
        channel.close()


async def userd_status(socket: Path) -> UserdStatus:
    async with _userd(socket) as stub:
        version = await stub.version(protobuf.Empty())
        info = await stub.status(protobuf.Empty())
        state = connector.ConnectState(info.state).name.lower()
        return UserdStatus(version.version, state, info.context, info.namespace)


async def rootd_version(socket: Path) -> common.VersionInfo:
    async with _rootd(socket) as stub:
        return await stub.version(protobuf.Empty())


async def quit_userd(socket: Path) -> None:
    async with _userd(socket) as stub:
        await stub.quit(protobuf.Empty())


async def quit_rootd(socket: Path) -> None:
    async with _rootd(socket) as stub:
        await stub.quit(protobuf.Empty())


async def set_userd_log_level(socket: Path, level: str, duration: int) -> None:
    async with _userd(socket) as stub:
        await stub.set_log_level(common.LogLevelRequest(level=level, duration_seconds=duration))


async def set_cluster_log_level(socket: Path, level: str, duration: int) -> None:
    """The traffic manager's and its agents' level, through userd's session."""
    async with _userd(socket) as stub:
        await stub.set_cluster_log_level(
            common.LogLevelRequest(level=level, duration_seconds=duration)
        )


async def set_rootd_log_level(socket: Path, level: str, duration: int) -> None:
    async with _rootd(socket) as stub:
        await stub.set_log_level(common.LogLevelRequest(level=level, duration_seconds=duration))


@dataclass(frozen=True)
class ConnectArguments:
    kubeconfig: str
    context: str
    namespace: str
    manager_namespace: str
    mapped_namespaces: list[str]
    also_proxy: list[str]
    never_proxy: list[str]
    no_install: bool
    environment: dict[str, str]
    routing: RoutingOptions = field(default_factory=RoutingOptions)


# Connecting may install the traffic manager and wait for it to be Ready.
CONNECT_TIMEOUT = 300.0


async def connect(
    socket: Path, args: ConnectArguments, on_step: Callable[[str], None]
) -> dict[str, Any]:
    """Run Connect on userd, reporting each step; returns the connection info as a dict."""
    async with _userd(socket, CONNECT_TIMEOUT) as stub:
        request = connector.ConnectRequest(
            kubeconfig=args.kubeconfig,
            context=args.context,
            namespace=args.namespace,
            manager_namespace=args.manager_namespace,
            mapped_namespaces=args.mapped_namespaces,
            also_proxy=args.also_proxy,
            never_proxy=args.never_proxy,
            no_install=args.no_install,
            environment=args.environment,
            routing=wire.routing_to_message(args.routing),
        )
        done: connector.ConnectInfo | None = None
        async for progress in stub.connect(request):
            if progress.step:
                on_step(progress.step)
            if progress.done is not None:
                done = progress.done
        if done is None:
            raise KubepresenceError("the user daemon ended the connect without a result")
        return views.connection(message_dict(done))


async def userd_info(socket: Path) -> dict[str, Any]:
    async with _userd(socket) as stub:
        return views.connection(message_dict(await stub.status(protobuf.Empty())))


async def disconnect(socket: Path) -> None:
    async with _userd(socket) as stub:
        await stub.disconnect(protobuf.Empty())


# Creating an intercept may roll the workload to inject the agent.
INTERCEPT_TIMEOUT = 180.0


async def create_intercept(
    socket: Path,
    *,
    workload: str,
    name: str,
    namespace: str,
    port: str,
    local: tuple[str, int],
    http_filter: HttpFilter | None = None,
    service: str = "",
    preview: PreviewOptions | None = None,
    mount: MountRequest | None = None,
    share_local_port: bool = False,
) -> views.InterceptResult:
    mount = mount or MountRequest(wanted=False)
    async with _userd(socket, INTERCEPT_TIMEOUT) as stub:
        info = await stub.create_intercept(
            connector.CreateInterceptRequest(
                mount_point=mount.path,
                share_local_port=share_local_port,
                spec=common.InterceptSpec(
                    name=name,
                    namespace=namespace,
                    workload_name=workload,
                    service_name=service,
                    service_port=port,
                    local_host=local[0],
                    local_port=local[1],
                    http_filter=filter_to_message(http_filter),
                    preview_ingress_host=preview.ingress_host if preview else "",
                    preview_ingress_port=preview.ingress_port if preview else 0,
                    preview_ingress_tls=preview.ingress_tls if preview else False,
                    mount_volumes=mount.wanted,
                ),
            )
        )
        return views.intercept_result(message_dict(info))


async def remove_intercept(socket: Path, name: str) -> None:
    async with _userd(socket, LOCAL_TIMEOUT * 2) as stub:
        await stub.remove_intercept(connector.RemoveInterceptRequest(name=name))


async def intercepts(socket: Path) -> list[views.InterceptResult]:
    async with _userd(socket) as stub:
        info = await stub.status(protobuf.Empty())
        return [views.intercept_result(message_dict(i)) for i in info.intercepts]


async def uninstall(
    socket: Path, *, workloads: list[str], namespace: str, all_agents: bool
) -> None:
    async with _userd(socket, CONNECT_TIMEOUT) as stub:
        await stub.uninstall(
            connector.UninstallRequest(
                workloads=workloads, namespace=namespace, all_agents=all_agents
            )
        )


# Logs of every agent pod can take a while to fetch.
GATHER_TIMEOUT = 120.0


async def gather_logs(socket: Path, destination: Path) -> list[str]:
    async with _userd(socket, GATHER_TIMEOUT) as stub:
        reply = await stub.gather_logs(connector.GatherLogsRequest(destination=str(destination)))
        return list(reply.files)


async def manage_traffic_manager(
    socket: Path,
    *,
    action: str,
    namespace: str,
    context: str,
    kubeconfig: str,
    environment: dict[str, str],
    on_step: Callable[[str], None],
) -> str:
    async with _userd(socket, CONNECT_TIMEOUT) as stub:
        request = connector.TrafficManagerRequest(
            action=connector.TrafficManagerAction[action.upper()],
            kubeconfig=kubeconfig,
            context=context,
            manager_namespace=namespace,
            environment=environment,
        )
        result = ""
        async for progress in stub.manage_traffic_manager(request):
            if progress.step:
                on_step(progress.step)
            if progress.result:
                result = progress.result
        return result
