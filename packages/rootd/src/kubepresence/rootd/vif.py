"""One connected session of the VIF: bring it up, keep it, take it down.

Bringing up, in an order that leaves nothing behind when a step fails: check the plan
against the machine's routes (a conflict is refused before anything changes), make sure
userd answers, choose how to point the system resolver at the cluster (systemd-resolved's
per-link DNS where resolved serves the machine, else resolv.conf rewritten in place; see
`core.resolved`), save resolv.conf's original bytes (resolv.conf method), open the TUN
device, add its routes, start the terminator with the cluster relay, and only then point
the resolver at the cluster DNS address (resolv.conf rewritten, or the TUN link configured
in resolved, recorded first so that a crash's leftovers can be reverted). Every change
registers its undo first; the undo steps are synchronous so they complete even while the
session's task is being cancelled.

The session ends when asked (Disconnect, Quit, SIGTERM), when the TUN fails, or when userd
goes away: its socket refuses (at once) or it has not answered for `userd_silence`
seconds. Flow tasks live in the session's task group; the session itself is a task of the
daemon's supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kubepresence.protocol.errors import ConfigError, UserError
from kubepresence.protocol.routing import RoutingOptions
from kubepresence.rootd.core import resolvconf
from kubepresence.rootd.core.dns import DnsPolicy
from kubepresence.rootd.core.endpoint import EndpointConfig, NetworkEndpoint
from kubepresence.rootd.core.network import (
    NetworkPlan,
    local_routes,
    plan_conflict,
    virtual_subnet_conflict,
)
from kubepresence.rootd.core.packets import OutputMode
from kubepresence.rootd.core.resolved import (
    LINK_ADDRESSES,
    ResolverMethod,
    link_settings,
    shown_domains,
)
from kubepresence.rootd.core.vnat import VirtualNetwork
from kubepresence.rootd.net import policyrouting
from kubepresence.rootd.net.dnsserving import DnsService
from kubepresence.rootd.net.policyrouting import PolicyRoutes
from kubepresence.rootd.net.relaying import ClusterRelay
from kubepresence.rootd.net.resolving import ResolvedLink, detect_method
from kubepresence.rootd.net.rewriting import RESOLV_CONF, ResolvConfRewriter
from kubepresence.rootd.net.routing import delete_stale_tun, read_routes
from kubepresence.rootd.net.terminating import Terminator
from kubepresence.rootd.net.translating import TranslatedCluster
from kubepresence.rootd.net.tun import TunDevice, add_first_address, configure_link
from kubepresence.rootd.rpc.connector import ConnectorClient, UserdUnreachableError
from kubepresence.rootd.rpc.manager import ManagerTunnels

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/kubepresence-rootd")
DNS_LOOKUP_TIMEOUT = 4.0


@dataclass(frozen=True, slots=True)
class VifSettings:
    """The daemon's command-line choices for every session."""

    tun_name: str = "kp0"
    mtu: int = 1500
    state_dir: Path = STATE_DIR
    resolv_conf: Path = RESOLV_CONF
    addresses: tuple[str, ...] = ()  # CIDRs for the TUN device; none: the kernel picks a source
    userd_silence: float = 15.0
    probe_interval: float = 2.0


@dataclass(frozen=True, slots=True)
class VifStatus:
    connected: bool
    vif_name: str = ""
    routed_subnets: tuple[str, ...] = ()
    dns_address: str = ""
    open_flows: int = 0
    fragments_received: int = 0
    datagrams_reassembled: int = 0
    fragments_sent: int = 0
    fragments_dropped: tuple[tuple[str, int], ...] = ()  # (reason, count), non-zero only
    routing: RoutingOptions = field(default_factory=RoutingOptions)
    # (virtual, cluster address, via) handed out this session
    virtual_addresses: tuple[tuple[str, str, str], ...] = ()
    resolver: str = ""  # ResolverMethod's value: how the system resolver was pointed here


@dataclass(slots=True)
class _Running:
    relay: ClusterRelay
    dns: DnsService
    terminator: Terminator
    endpoint: NetworkEndpoint = field(repr=False)
    virtual: VirtualNetwork | None = None
    resolver: ResolverMethod = ResolverMethod.RESOLV_CONF


class VifSession:
    """The VIF for one plan; `run` is its task (see the module docstring)."""

    def __init__(self, plan: NetworkPlan, settings: VifSettings) -> None:
        self.plan = plan
        self.settings = settings
        self.stop_reason = ""
        self.session_id = plan.session_id  # userd tells a new one when it arrives again
        self.done = asyncio.Event()
        self._stop = asyncio.Event()
        self._nudge = asyncio.Event()
        self._running: _Running | None = None

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            log.info("disconnecting: %s", reason)
            self.stop_reason = reason
            self._stop.set()

    @property
    def running(self) -> _Running | None:
        return self._running

    def status(self) -> VifStatus:
        running = self._running
        if running is None or self.done.is_set():
            return VifStatus(connected=False)
        stats = running.endpoint.stats
        return VifStatus(
            connected=True,
            vif_name=running.terminator.device.name,
            routed_subnets=tuple(str(s) for s in self.plan.routed),
            dns_address=str(self.plan.dns_address),
            open_flows=running.relay.open_flows,
            fragments_received=stats.fragments.fragments,
            datagrams_reassembled=stats.fragments.reassembled,
            fragments_sent=stats.fragments_sent,
            fragments_dropped=tuple(
                (reason, count)
                for reason in stats.fragments.drop_reasons()
                if (count := getattr(stats.fragments, reason))
            ),
            routing=self.plan.routing,
            virtual_addresses=tuple(
                (str(virtual), str(destination.address), destination.via)
                for virtual, destination in (
                    running.virtual.mappings() if running.virtual is not None else []
                )
            ),
            resolver=running.resolver.value,
        )

    async def run(self, ready: asyncio.Future[None]) -> None:
        """Bring the VIF up, set `ready` (or its failure), serve until stopped, undo all."""
        try:
            with contextlib.ExitStack() as undo:
                try:
                    await self._serve(ready, undo)
                except Exception as error:  # handed to Connect, or logged once running
                    if ready.done():
                        log.exception("the VIF failed")
                    else:
                        ready.set_exception(error)
        finally:
            self._running = None
            self.done.set()
            if not ready.done():
                ready.set_exception(ConfigError("the VIF stopped before it was up"))
            log.info("VIF down (%s)", self.stop_reason or "setup failed")

    async def _serve(self, ready: asyncio.Future[None], undo: contextlib.ExitStack) -> None:
        plan, settings = self.plan, self.settings
        name = settings.tun_name
        if os.geteuid() != 0:
            raise ConfigError(
                f"rootd runs as uid {os.geteuid()}: it must run as root to create the TUN "
                "device, routes and resolver settings"
            )
        local = local_routes(await asyncio.to_thread(read_routes), own_device=name)
        mistake = virtual_subnet_conflict(plan, local)
        if mistake is not None:
            raise UserError(mistake)
        conflict = plan_conflict(plan, local)
        if conflict is not None:
            raise ConfigError(conflict)

        client = ConnectorClient(Path(plan.connector_socket))
        undo.callback(client.close)
        try:
            await client.ping(seconds=5.0)
        except UserdUnreachableError as error:
            raise ConfigError(
                f"rootd cannot reach userd at {plan.connector_socket}: {error}"
            ) from None
        manager = ManagerTunnels(Path(plan.manager_socket), lambda: self.session_id)
        undo.callback(manager.close)

        rewriter = ResolvConfRewriter(settings.state_dir, settings.resolv_conf)
        linker = ResolvedLink(settings.state_dir)
        owner = rewriter.live_owner() or linker.live_owner()
        if owner is not None:
            raise ConfigError(
                f"another kubepresence session is connected on this machine (rootd pid {owner})"
            )
        if rewriter.has_backup():
            rewriter.restore()  # what a dead rootd left since our start-up
        if linker.has_record():
            await asyncio.to_thread(linker.revert)
        method = await asyncio.to_thread(detect_method, settings.resolv_conf)
        dns_address = str(plan.dns_address)
        original = rewriter.read()
        previous = resolvconf.parse(original.decode(errors="replace"))
        if method is ResolverMethod.RESOLV_CONF:
            rewriter.save_backup(original)
            undo.callback(_safely(rewriter.restore, "restoring resolv.conf"))
            upstreams = resolvconf.upstreams(previous, dns_address)
        else:
            # resolved sends rootd only names under the link's domains (cluster names);
            # forwarding anything to its stub would come straight back here.
            upstreams = []

        try:
            device = TunDevice.open(name)
        except OSError as error:
            hint = " (rootd must run as root)" if error.errno in (errno.EPERM, errno.EACCES) else ""
            raise ConfigError(
                f"cannot create the TUN device {name}: {error.strerror or error}{hint}"
            ) from None
        undo.callback(_safely(device.close, f"closing {name}"))
        try:
            await asyncio.to_thread(
                configure_link,
                device.name,
                settings.mtu,
                list(settings.addresses),
                [str(route) for route in plan.routes],
            )
            if method is ResolverMethod.RESOLVED and not settings.addresses:
                await asyncio.to_thread(add_first_address, device.name, LINK_ADDRESSES)
        except OSError as error:
            raise ConfigError(f"cannot route through {name}: {error.strerror or error}") from None
        if plan.policy_routes:
            policy = PolicyRoutes(settings.state_dir)
            undo.callback(_safely(policy.remove, "removing the policy rules"))
            try:
                await asyncio.to_thread(
                    policy.add, device.name, [str(route) for route in plan.policy_routes]
                )
            except OSError as error:
                raise ConfigError(
                    f"cannot add the policy rules: {error.strerror or error}"
                ) from None

        virtual: VirtualNetwork | None = None
        if plan.virtual_subnet is not None:
            virtual = VirtualNetwork(plan.virtual_subnet, plan.translated)
            if plan.cluster_dns_address is not None:
                virtual.bind_dns(plan.cluster_dns_address)

        options = plan.routing
        dns = DnsService(
            DnsPolicy(
                plan.cluster_domain,
                plan.search_namespaces,
                include_suffixes=options.dns_include_suffixes,
                exclude_suffixes=options.dns_exclude_suffixes,
                mappings=dict(options.dns_mappings),
            ),
            lambda qname, qtype: client.lookup_dns(
                self.session_id, qname, qtype, seconds=DNS_LOOKUP_TIMEOUT
            ),
            upstreams,
            translate=virtual.virtual_for if virtual is not None else None,
        )
        revert_resolver = _safely(
            rewriter.restore if method is ResolverMethod.RESOLV_CONF else linker.revert,
            f"reverting the resolver ({method.value})",
        )
        offload = device.offload
        async with asyncio.TaskGroup() as tasks:
            terminator = Terminator(
                device,
                plan.all_routes,
                EndpointConfig(
                    mtu=settings.mtu,
                    output=OutputMode(offload.vnet_header, offload.checksum, offload.tso),
                ),
            )
            relay = ClusterRelay(
                manager if virtual is None else TranslatedCluster(manager, virtual),
                tasks,
                dns,
                plan.dns_address,
                terminator,
                on_channel_error=self._channel_error,
            )
            terminator.start(relay)
            endpoint = terminator.endpoint
            watchdog: asyncio.Task[None] | None = None
            try:
                if method is ResolverMethod.RESOLV_CONF:
                    rewriter.install(
                        resolvconf.render(
                            previous, dns_address, plan.search_namespaces, plan.cluster_domain
                        )
                    )
                else:
                    await self._configure_link(linker, undo, device.name, dns_address)
                self._running = _Running(
                    relay, dns, terminator, endpoint, virtual=virtual, resolver=method
                )
                log.info(
                    "VIF %s up: routes %s, DNS %s for %s through %s (previous resolvers %s)",
                    device.name,
                    " ".join(str(r) for r in plan.all_routes),
                    dns_address,
                    plan.cluster_domain,
                    method.value,
                    " ".join(dns.upstreams) or "none",
                )
                ready.set_result(None)
                watchdog = tasks.create_task(self._watch_userd(client), name="userd-watchdog")
                device_failed = tasks.create_task(terminator.stopped.wait(), name="tun-watch")
                stop = tasks.create_task(self._stop.wait(), name="stop-wait")
                await asyncio.wait({device_failed, stop}, return_when=asyncio.FIRST_COMPLETED)
                if terminator.error is not None:
                    self.request_stop(f"the TUN device failed: {terminator.error}")
                device_failed.cancel()
                stop.cancel()
            finally:
                self._running = None
                # The resolver first: no moment where it names an address nobody serves.
                revert_resolver()
                terminator.stop()
                relay.close()
                fragments = endpoint.stats.fragments
                if fragments.fragments:
                    log.info(
                        "IP fragments this session: %d received, %d datagrams reassembled, "
                        "%d fragments sent; dropped: %s",
                        fragments.fragments,
                        fragments.reassembled,
                        endpoint.stats.fragments_sent,
                        fragments.summary(),
                    )
                if watchdog is not None:
                    watchdog.cancel()

    async def _configure_link(
        self, linker: ResolvedLink, undo: contextlib.ExitStack, name: str, dns_address: str
    ) -> None:
        plan = self.plan
        options = plan.routing
        wanted = link_settings(
            dns_address,
            plan.search_namespaces,
            plan.cluster_domain,
            also_routed=[
                *options.dns_include_suffixes,
                *(name for name, _ in options.dns_mappings),
            ],
            excluded=options.dns_exclude_suffixes,
        )
        # Registered before the first call: a half-configured link is reverted as well (and
        # before the TUN closes, so the revert finds the link).
        undo.callback(_safely(linker.revert, "reverting the resolved link"))
        try:
            await asyncio.to_thread(linker.configure, name, wanted)
        except OSError as error:  # ResolvedError too
            raise ConfigError(f"systemd-resolved refused the settings of {name}: {error}") from None
        log.info(
            "resolved: %s DNS %s, domains %s, default route %s",
            name,
            dns_address,
            " ".join(shown_domains(wanted)),
            "yes" if wanted.default_route else "no",
        )

    def _channel_error(self, error: BaseException) -> None:
        log.debug("manager channel error: %s", error)
        self._nudge.set()  # probe userd now rather than at the next interval

    async def _watch_userd(self, client: ConnectorClient) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        last_answer = loop.time()
        while not self._stop.is_set():
            try:
                await client.ping(seconds=min(5.0, settings.userd_silence))
                last_answer = loop.time()
            except UserdUnreachableError as error:
                if error.gone:
                    self.request_stop(f"userd went away ({error})")
                    return
                silent = loop.time() - last_answer
                if silent > settings.userd_silence:
                    self.request_stop(f"userd has not answered for {silent:.0f} s")
                    return
            self._nudge.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.probe_interval):
                    await self._nudge.wait()


def _safely(step: Callable[[], object], what: str) -> Callable[[], None]:
    """An undo step that logs its failure instead of skipping the steps after it."""

    def run() -> None:
        try:
            step()
        except Exception:
            log.exception("%s failed", what)

    return run


def recover(settings: VifSettings, dead: int | None = None) -> None:
    """Undo what a crashed run left: policy rules, resolv.conf, the resolved link, a stale
    TUN. Blocking.

    `dead`: the pid of a rootd known to be gone (the guardian's), even while it is still a
    zombie that looks alive."""
    try:
        policyrouting.recover(settings.state_dir, dead)
    except OSError as error:
        log.error("could not remove the policy rules a previous run left: %s", error)
    rewriter = ResolvConfRewriter(settings.state_dir, settings.resolv_conf)
    linker = ResolvedLink(settings.state_dir)
    if not rewriter.has_backup() and not linker.has_record():
        return
    owner = rewriter.live_owner() or linker.live_owner()
    if owner is not None and owner != dead:
        log.warning(
            "another rootd (pid %d) is connected in this network namespace; leaving it alone",
            owner,
        )
        return
    if rewriter.has_backup():
        log.warning("a previous run did not clean up; restoring %s", settings.resolv_conf)
        try:
            rewriter.restore()
        except OSError as error:
            log.error("could not restore %s: %s", settings.resolv_conf, error)
    if linker.has_record():
        log.warning("a previous run did not clean up; reverting its systemd-resolved link")
        try:
            linker.revert()
        except OSError as error:  # kept for the next start
            log.error("could not revert the systemd-resolved link: %s", error)
    delete_stale_tun(settings.tun_name)
