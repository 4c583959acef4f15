"""The user daemon's live link to a cluster: API clients, the port-forward to the traffic
manager, the gRPC channel over it, and the client session with its keep-alive.

`ClusterConnection.open` does the slow steps once and reports each through `progress`;
`run` then keeps the session alive until cancelled, arriving again when the manager
forgot it (it restarted, or we were away longer than its TTL) and riding out a lost
port-forward (every new gRPC connection opens a fresh port-forward to whichever manager
pod is Ready; see `portforward_grpc`). What happened meanwhile is kept in `events` for `status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kubepresence.protocol import version_of
from kubepresence.protocol.backoff import Backoff
from kubepresence.protocol.errors import ConfigError, KubepresenceError
from kubepresence.protocol.routing import RoutingOptions, VirtualAddress
from kubepresence.protocol.transport import CONFIGURATION
from kubepresence.userd.core.manifests import ManagerInstall
from kubepresence.userd.k8s import installing
from kubepresence.userd.k8s.apiclient import KubeTarget, rest_client, websocket_client
from kubepresence.userd.k8s.portforward import PortForwarder
from kubepresence.userd.k8s.portforward_grpc import PortForwardChannel, find_manager_pod
from kubepresence.userd.rpc.manager import (
    ClusterNetwork,
    InterceptRequest,
    InterceptView,
    ManagerClient,
    SessionGoneError,
)
from kubepresence.userd.rpc.rootd import FragmentCounters

if TYPE_CHECKING:
    from kubepresence.userd.agentdials import AgentDials

log = logging.getLogger(__name__)


MANAGER_GRPC_PORT = 8081
REMAIN_INTERVAL = 5.0
MAX_BACKOFF = 30.0
FIRST_RETRY = 1.0  # the first retry of an unreachable manager
WATCH_RETRY = 0.5  # the first wait before a broken intercept watch is watched again
EVENTS_KEPT = 20

Progress = Callable[[str], None]


@dataclass
class ConnectOptions:
    manager_namespace: str = "kubepresence"
    mapped_namespaces: list[str] = field(default_factory=list)
    also_proxy: list[str] = field(default_factory=list)
    never_proxy: list[str] = field(default_factory=list)
    no_install: bool = False
    port_forward: str = "auto"  # the protocol to the manager: auto, spdy or websocket
    # What an on-demand install applies (registry, pull secrets); None: the defaults.
    install: ManagerInstall | None = None
    routing: RoutingOptions = field(default_factory=RoutingOptions)


class ClusterConnection:
    def __init__(self, target: KubeTarget, options: ConnectOptions) -> None:
        self.target = target
        self.options = options
        self.api = rest_client(target.configuration)
        self.ws_api = websocket_client(target.configuration)
        self.forwarder = PortForwarder(
            self.ws_api,
            options.manager_namespace,
            self._manager_pod,
            MANAGER_GRPC_PORT,
            options.port_forward,
        )
        self.channel = PortForwardChannel(self.forwarder, CONFIGURATION)
        self.manager = ManagerClient(self.channel)
        self.session_id = ""
        # Told (session id, cluster id) after arriving again: rootd's flows name the session.
        self.on_new_session: Callable[[str, str], Awaitable[None]] | None = None
        self.cluster_id = ""
        # Our intercepts' connections straight from their agents (set once connected).
        self.agent_dials: AgentDials | None = None
        self.network: ClusterNetwork | None = None
        self.vif_name = ""
        self.routed_subnets: list[str] = []
        self.network_problem = ""  # why the cluster network is down ("" up, or never up)
        self.open_flows = 0
        self.fragments = FragmentCounters()
        self.virtual_addresses: list[VirtualAddress] = []  # as rootd last said
        self.resolver = ""  # "systemd-resolved" or "resolv.conf", as rootd last said
        self.intercepts: list[InterceptView] = []
        # What this session intercepts, as asked: made again at a manager that forgot it.
        self.wanted: dict[str, InterceptRequest] = {}
        self.lost: dict[str, str] = {}  # intercepts that could not be made again: why
        self._intercepts_changed = asyncio.Event()
        self._session_changed = asyncio.Event()  # set (and replaced) at every arrival
        self.events: list[str] = []

    async def _manager_pod(self) -> str:
        return await find_manager_pod(self.api, self.options.manager_namespace)

    def note(self, event: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {event}"
        log.info("%s", event)
        self.events = [*self.events, stamped][-EVENTS_KEPT:]

    async def ensure_manager(self, progress: Progress) -> None:
        namespace = self.options.manager_namespace
        progress(f"looking for the traffic manager in namespace {namespace}")
        installed = await installing.find_manager(self.api, namespace)
        ours = version_of("kubepresence-userd")
        if installed is None:
            if self.options.no_install:
                raise ConfigError(
                    f"no traffic manager in namespace {namespace} and --no-install was given: "
                    "install it with 'kubepresence helm install'"
                )
            progress(f"installing the traffic manager {ours} in namespace {namespace}")
            outcome = await installing.ensure_manager(
                self.api, self.options.install or ManagerInstall(namespace=namespace), progress
            )
            self.note(f"traffic manager {outcome}")
        elif installed == ours:
            # Installed, but maybe only half (a connect killed while installing) or still
            # rolling out: whole and available before the port-forward looks for its pod.
            created = await installing.complete_manager(
                self.api, self.options.install or ManagerInstall(namespace=namespace), progress
            )
            if created:
                self.note(f"traffic manager completed: {', '.join(created)} created")
        else:
            self.note(
                f"the traffic manager is version {installed}, this client {ours}: "
                "'kubepresence helm upgrade' brings it in line"
            )
            progress(self.events[-1].split(" ", 1)[1])

    async def open(self, channel_ready: asyncio.Event, progress: Progress) -> None:
        """Arrive at the manager (`channel.run` must be running)."""
        await asyncio.wait_for(channel_ready.wait(), 10)
        progress("connecting to the traffic manager through the API server")
        await self._arrive()
        self.network = await self.manager.cluster_network()
        self.note(
            f"connected to {self.target.context} as session {self.session_id} "
            f"(manager {self.network.manager_version}, port-forward over {self.forwarder.protocol})"
        )

    async def _arrive(self) -> None:
        name = f"{getpass.getuser()}@{socket.gethostname()}"
        self.session_id, self.cluster_id = await self.manager.arrive(
            name, install_id=socket.gethostname(), version=version_of("kubepresence-userd")
        )
        self._session_changed.set()
        self._session_changed = asyncio.Event()

    async def pause(self, seconds: float, watched: str) -> None:
        """Sleep up to `seconds`, less if the session is no longer `watched`: a watch of
        the old session waits for nothing once the session arrived again."""
        if self.session_id != watched:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._session_changed.wait()

    async def keep_alive(self) -> None:
        """Remain every few seconds until cancelled; arrive again when forgotten.

        While the manager is unreachable, ask again after 1 s, then doubling: a restarted
        manager is back in seconds, and every intercept waits for this arrival."""
        backoff = Backoff(first=FIRST_RETRY, limit=MAX_BACKOFF)
        while True:
            await asyncio.sleep(backoff.delay if backoff.failing else REMAIN_INTERVAL)
            try:
                try:
                    await self.manager.remain(self.session_id)
                except SessionGoneError:
                    self.note("the traffic manager forgot the session; arriving again")
                    await self._arrive()
                    self.note(f"arrived again as session {self.session_id}")
                    if self.on_new_session is not None:
                        await self.on_new_session(self.session_id, self.cluster_id)
                    await self._intercepts_again()
                if backoff.succeeded():
                    self.note("traffic manager reachable again")
            except KubepresenceError as error:
                if not backoff.failing:
                    self.note(f"lost the traffic manager: {error.message}")
                backoff.failed(error.message)

    async def _intercepts_again(self) -> None:
        """Ask the manager (restarted, so it forgot them) for this session's intercepts
        again; the agents arrive again by themselves and the manager activates them. One
        that cannot be made again is reported (events, and `leave` of it)."""
        for name, request in list(self.wanted.items()):
            try:
                await self.manager.create_intercept(self.session_id, request)
            except KubepresenceError as error:
                del self.wanted[name]
                self.lost[name] = error.message
                self.note(f"intercept {name} could not be made again: {error.message}")
            else:
                self.note(f"intercept {name} made again at the traffic manager")

    async def follow_intercepts(self) -> None:
        """Keep `intercepts` current from the manager's watch, re-watching when it breaks."""
        backoff = Backoff(first=WATCH_RETRY, limit=MAX_BACKOFF)
        while True:
            watched = self.session_id
            try:
                async for snapshot in self.manager.watch_intercepts(watched):
                    backoff.succeeded()
                    self.intercepts = snapshot
                    self._intercepts_changed.set()
                    self._intercepts_changed = asyncio.Event()
            except KubepresenceError as error:
                log.info("intercept watch interrupted (%s)", error.message)
            await self.pause(backoff.failed()[0], watched)
            if self.session_id != watched:
                backoff.succeeded()

    async def intercept_changed(self) -> None:
        """Wait until the next intercept snapshot arrives."""
        await self._intercepts_changed.wait()

    async def depart(self) -> None:
        """End the session at the manager, which drops its intercepts now (best effort: it
        expires the session anyway). Needs the port-forward still serving."""
        session_id, self.session_id = self.session_id, ""
        if session_id:
            try:
                await asyncio.wait_for(self.manager.depart(session_id), 3)
            except (KubepresenceError, TimeoutError) as error:
                log.warning("depart failed (the session will expire): %s", error)

    async def close(self) -> None:
        """Drop the clients (after `depart`)."""
        self.channel.close()
        await self.api.close()
        await self.ws_api.close()
