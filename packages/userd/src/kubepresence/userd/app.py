"""Composition root of the user daemon: builds the services and owns the task group."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from kubepresence.protocol.errors import KubepresenceError
from kubepresence.protocol.jsoncalls import USERD_CALLS
from kubepresence.protocol.jsonserving import close_json_calls, serve_json_calls
from kubepresence.protocol.lifecycle import Supervisor
from kubepresence.protocol.paths import json_calls_socket, manager_splice_socket
from kubepresence.protocol.transport import close_server, serve_unix
from kubepresence.userd.agentdials import AgentDials
from kubepresence.userd.answering import answer_dials
from kubepresence.userd.connecting import ClusterConnection, ConnectOptions, Progress
from kubepresence.userd.core.manifests import install_from_environment
from kubepresence.userd.core.session import SessionState
from kubepresence.userd.k8s import agents, installing, namespaces
from kubepresence.userd.k8s.apiclient import kubeconfig_source, resolve_target, rest_client
from kubepresence.userd.k8s.portforward_splice import ManagerSplices
from kubepresence.userd.mounting import Mounts
from kubepresence.userd.rpc import rootd
from kubepresence.userd.rpc.connector import ConnectorService

log = logging.getLogger(__name__)

ROOTD_WATCH_INTERVAL = 1.0  # how soon a dead root daemon is noticed


class UserDaemon:
    def __init__(self, socket_path: Path, rootd_socket: Path) -> None:
        self.socket_path = socket_path
        self.rootd_socket = rootd_socket
        self.manager_socket = manager_splice_socket(socket_path)  # rootd's way to the manager
        self.state = SessionState()
        self.connection: ClusterConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []  # the session's, on top of the port-forward
        self._forwarding: asyncio.Task[None] | None = None
        self._supervisor: Supervisor | None = None
        self.mounts = Mounts()  # `intercept --mount`: they end with the session

    async def run(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        service = ConnectorService(self, supervisor)
        # The CLI's quick commands ask in JSON first: it answers before the gRPC socket
        # does, so that one answering means both do.
        json_socket = json_calls_socket(self.socket_path)
        json_server = await serve_json_calls([service], USERD_CALLS, json_socket)
        try:
            server = await serve_unix([service], self.socket_path, mode=0o600)
        except BaseException:
            await close_json_calls(json_server, json_socket)
            raise
        try:
            await supervisor.stopping.wait()
        finally:
            await self.disconnect()
            await close_server(server)
            self.socket_path.unlink(missing_ok=True)
            await close_json_calls(json_server, json_socket)

    async def connect(
        self,
        *,
        kubeconfig: str,
        environment: dict[str, str],
        context: str,
        namespace: str,
        options: ConnectOptions,
        progress: Progress,
    ) -> ClusterConnection:
        """Join the cluster named by the kubeconfig; on any failure nothing stays behind."""
        assert self._supervisor is not None, "connect before run"
        current = self.connection
        if current is not None:
            # The watch looks every second; a root daemon that died just now, or a frozen
            # one that answers again, is found here.
            await self._look_at_rootd(current)
        if current is not None and current.network_problem:
            # The session lives; only its network went with a dead root daemon. `connect`
            # started a new one (which restored what the old one left): join it.
            progress(f"bringing the cluster network back ({current.network_problem})")
            await self._join_network(current, progress)
            current.network_problem = ""
            if self.mounts.get_all():
                progress("mounting the intercepts' volumes again")
                problems = await self.mounts.remount_all()
                current.note("volumes mounted again" + "".join(f"; {p}" for p in problems))
            return current
        progress("reading the kubeconfig")
        target = await resolve_target(
            kubeconfig_source(kubeconfig, environment), context, namespace
        )
        options = replace(options, routing=options.routing.in_namespace(target.namespace))
        if current is not None and (
            current.target.context,
            current.target.namespace,
            current.options,
        ) == (target.context, target.namespace, options):
            # The same connect again (a script, a retry after a hiccup): it is done.
            return current
        self.state.begin_connect(target.context, target.namespace)
        connection = ClusterConnection(target, options)
        try:
            # Before anything is installed: a misspelt -n must not leave a manager behind.
            await namespaces.require(
                connection.api,
                [
                    target.namespace,
                    *options.mapped_namespaces,
                    *(p.namespace for p in options.routing.proxy_via),
                ],
                target.context,
            )
            await agents.require_agents(
                connection.api,
                [
                    (p.namespace, p.workload, f"--proxy-via {p.cidr}")
                    for p in options.routing.proxy_via
                ],
            )
            await connection.ensure_manager(progress)
            ready = asyncio.Event()
            self._forwarding = self._supervisor.spawn(
                connection.channel.run(ready),
                name="manager-port-forward",
            )
            await connection.open(ready, progress)
            splicing = asyncio.Event()
            self._tasks.append(
                self._supervisor.spawn(
                    ManagerSplices(connection.forwarder, self.manager_socket).run(splicing),
                    name="manager-splices",
                )
            )
            await asyncio.wait_for(splicing.wait(), 10)
            connection.on_new_session = self._tell_rootd_session
            await self._join_network(connection, progress)
            connection.agent_dials = AgentDials(
                connection.manager,
                connection.ws_api,
                connection.options.port_forward,
                session=lambda: connection.session_id,
                intercepts=lambda: connection.intercepts,
                changed=connection.intercept_changed,
                pause=connection.pause,
            )
            for coroutine, name in (
                (self._watch_rootd(connection), "rootd-watch"),
                (connection.keep_alive(), "session-keep-alive"),
                (connection.follow_intercepts(), "intercept-watch"),
                (
                    answer_dials(
                        connection.manager, lambda: connection.session_id, connection.pause
                    ),
                    "dial-answers",
                ),
                (connection.agent_dials.run(), "agent-dials"),
            ):
                self._tasks.append(self._supervisor.spawn(coroutine, name=name))
        except BaseException:
            await self._tear_down(connection)
            raise
        self.connection = connection
        self.state.connected(connection.session_id)
        return connection

    async def _join_network(self, connection: ClusterConnection, progress: Progress) -> None:
        assert connection.network is not None, "open() reads the cluster network"
        progress("bringing up the cluster network (TUN device, routes, DNS)")
        status = await rootd.connect_network(
            self.rootd_socket,
            session_id=connection.session_id,
            cluster_id=connection.cluster_id,
            network=connection.network,
            also_proxy=connection.options.also_proxy,
            never_proxy=connection.options.never_proxy,
            search_namespaces=[connection.target.namespace, *connection.options.mapped_namespaces],
            connector_socket=self.socket_path,
            manager_socket=self.manager_socket,
            routing=connection.options.routing,
        )
        connection.vif_name = status.vif_name
        connection.routed_subnets = list(status.routed_subnets)
        connection.resolver = status.resolver
        connection.note(
            f"cluster network up on {status.vif_name}: {', '.join(status.routed_subnets)}"
        )

    async def _tell_rootd_session(self, session_id: str, cluster_id: str) -> None:
        """rootd's flows name the session: after arriving again, the new one."""
        try:
            await rootd.update_session(self.rootd_socket, session_id, cluster_id)
        except KubepresenceError as error:  # a dead rootd is seen by the watch; a new one
            log.warning("the root daemon did not take the new session: %s", error.message)

    async def _watch_rootd(self, connection: ClusterConnection) -> None:
        """Notice within seconds when the root daemon goes (SIGKILL, OOM, a crash) or stops
        answering (frozen): the session stays, `status` says the network is down and why,
        and the next `connect` joins the new root daemon it starts. (rootd's guardian
        restores what a dead one changed.) A frozen one that answers again with the
        network still up needs nothing: the problem clears by itself."""
        while True:
            await asyncio.sleep(ROOTD_WATCH_INTERVAL)
            await self._look_at_rootd(connection)

    async def _look_at_rootd(self, connection: ClusterConnection) -> None:
        try:
            status = await rootd.network_status(self.rootd_socket)
        except KubepresenceError as error:
            problem = f"the root daemon stopped ({error.message})"
        else:
            connection.open_flows = status.open_flows
            connection.fragments = rootd.fragment_counters(status)
            connection.virtual_addresses = rootd.virtual_addresses(status)
            connection.resolver = status.resolver
            if status.connected and status.vif_name:
                if connection.network_problem and not connection.vif_name:
                    connection.vif_name = status.vif_name
                    connection.network_problem = ""
                    connection.note(
                        f"the root daemon answers again: cluster network up on {status.vif_name}"
                    )
                return
            problem = "the root daemon lost the cluster network"
        if not connection.network_problem and connection.vif_name:
            connection.network_problem = problem
            connection.vif_name = ""
            connection.note(f"{problem}: run 'kubepresence connect' to bring it back")

    async def manage_traffic_manager(
        self,
        *,
        action: str,
        kubeconfig: str,
        environment: dict[str, str],
        context: str,
        namespace: str,
        progress: Progress,
    ) -> str:
        """helm install|upgrade|uninstall of the traffic manager; what was done."""
        target = await resolve_target(kubeconfig_source(kubeconfig, environment), context)
        connection = self.connection
        if (
            action == "uninstall"
            and connection is not None
            and connection.options.manager_namespace == namespace
            and connection.target.context == target.context
        ):
            progress("ending this session: its traffic manager goes away")
            await self.disconnect()
        async with rest_client(target.configuration) as api:
            return await installing.manage_manager(
                api, action, install_from_environment(namespace, environment), progress
            )

    async def disconnect(self) -> bool:
        """End the session and everything it started; False when there was none."""
        connection, self.connection = self.connection, None
        if connection is None:
            return False
        await self._tear_down(connection)
        return True

    async def _tear_down(self, connection: ClusterConnection) -> None:
        await self.mounts.unmount_all()
        if connection.vif_name:
            try:
                await rootd.disconnect_network(self.rootd_socket)
            except KubepresenceError as error:  # rootd undoes its changes when it stops anyway
                log.warning("the root daemon did not disconnect: %s", error.message)
            connection.vif_name = ""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await connection.depart()  # while the port-forward still carries it
        forwarding, self._forwarding = self._forwarding, None
        if forwarding is not None:
            forwarding.cancel()
            await asyncio.gather(forwarding, return_exceptions=True)
        await connection.close()
        self.state.disconnected()
