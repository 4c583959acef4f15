"""Making an intercept: ask the manager for it, then wait, bounded, until its agents are in.

`engage` checks what can fail before anything changes (the mount point, the Service port,
a local port another intercept uses, the namespace's Pod Security level), asks the
manager for the intercept, and then runs the arrival loop: it looks at the workload's
pods and the intercept's state, asks `core.arrival.decide` what to do, does it (delete
pods, ask the manager and the Service, show a step, wait for the next change), and so on
until the decision is `Done` or `Stuck`, or the wait runs out. Whatever fails on the way
removes the intercept again: nothing stays half applied. On success the intercept is
remembered (made again if the manager forgets it) and its volumes are mounted if asked.

`ArrivalSource` is what the loop reads and changes in the cluster; `ClusterArrivals` is
the real one, tests use their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Protocol

from kubepresence.protocol.errors import ClusterError, KubepresenceError, UserError
from kubepresence.userd import mounting
from kubepresence.userd.connecting import ClusterConnection
from kubepresence.userd.core import arrival, interceptports
from kubepresence.userd.k8s import agents, podsecurity, resolving
from kubepresence.userd.mounting import Mounts
from kubepresence.userd.rpc.manager import InterceptRequest, InterceptView

log = logging.getLogger(__name__)

INTERCEPT_WAIT = 120.0
ARRIVAL_POLL = 0.5  # how often the pods are looked at while agents arrive


@dataclass(frozen=True)
class Engagement:
    """An intercept as the user asks for it."""

    request: InterceptRequest  # its `port` is filled in from `service_port`
    service_port: str  # as the user names it (a Service port), "" for the only one
    service_name: str  # "" for the one Service that selects the workload
    share_local_port: bool = False
    mount_volumes: bool = False
    mount_point: str = ""  # "": a temporary directory


@dataclass(frozen=True)
class Engaged:
    """An active intercept whose agents are all in."""

    view: InterceptView
    service: str  # the Service the port was resolved through ("" for none)
    note: str  # what the port resolution wants the user to know
    mount_point: str = ""
    mount_error: str = ""


class ArrivalSource(Protocol):
    """What the arrival loop reads and changes."""

    def intercept(self, view: InterceptView) -> InterceptView:
        """The intercept's latest view (`view` when none newer has come)."""

    async def workload(self) -> agents.Arrival:
        """The workload and its pods now (raises when the namespace refuses the pods)."""

    async def replace(self, pods: list[str]) -> None:
        """Delete the pods: their workload makes them again."""

    async def confirm(self) -> tuple[set[str], set[str] | None]:
        """The pods whose agents the manager knows, and those the Service routes to."""

    async def changed(self) -> None:
        """Return when the intercept's state may have changed."""

    async def restore_template(self, why: str) -> None:
        """Put the workload's pod template back as it was before the intercept."""


async def engage(
    connection: ClusterConnection,
    mounts: Mounts,
    want: Engagement,
    steps: MutableMapping[str, str],
    *,
    wait: float = INTERCEPT_WAIT,
    poll: float = ARRIVAL_POLL,
) -> Engaged:
    """Make the intercept and wait until it is active with all of its agents.

    `steps[intercept id]` is what the wait is at, while it waits (`status` shows it)."""
    asked = want.request
    if want.mount_volumes:
        mounting.check_mount_point(want.mount_point)  # a bad one fails before anything
    # The user names a Service port; the manager and the agent know container ports.
    resolved = await resolving.resolve_port(
        connection.api, asked.namespace, asked.workload, want.service_port, want.service_name
    )
    request = replace(asked, port=resolved.port)
    if not want.share_local_port:
        clash = interceptports.conflict(
            (
                interceptports.LocalTarget(
                    i.name, i.namespace, i.workload, i.port, i.local_host, i.local_port
                )
                for i in connection.intercepts
            ),
            interceptports.LocalTarget(
                request.name, request.namespace, request.workload, request.port, *request.local
            ),
        )
        if clash:
            raise UserError(clash)
    # A takeover the namespace's Pod Security level forbids is refused here, untouched.
    admission = await podsecurity.admission_guard(
        connection.api, request.namespace, request.workload, resolved
    )
    view = await connection.manager.create_intercept(connection.session_id, request)
    source = ClusterArrivals(connection, request, resolved.service, admission)
    loop = ArrivalLoop(source, view, f"{request.namespace}/{request.workload}", steps, wait, poll)
    mounted = ("", "")

    async def arrived(view: InterceptView) -> None:
        nonlocal mounted
        connection.wanted[view.name] = request  # made again if forgotten
        if want.mount_volumes:
            mounted = await mounts.mount_intercept(
                view.name, want.mount_point, view.pod_ip, view.sftp_port
            )

    try:
        view = await loop.run(arrived)
    except BaseException:
        # Nothing half-applied: the intercept goes when it cannot become active.
        with contextlib.suppress(KubepresenceError):
            await connection.manager.remove_intercept(connection.session_id, view.name)
        raise
    return Engaged(view, resolved.service, resolved.note, *mounted)


class ArrivalLoop:
    """Wait, bounded, until the intercept's agents are in (see the module doc)."""

    def __init__(
        self,
        source: ArrivalSource,
        view: InterceptView,
        workload: str,
        steps: MutableMapping[str, str],
        wait: float = INTERCEPT_WAIT,
        poll: float = ARRIVAL_POLL,
    ) -> None:
        self._source = source
        self._view = view
        self._steps = steps
        self._wait = wait
        self._poll = poll
        self.snapshot = arrival.Snapshot(
            intercept=view.name,
            workload=workload,
            wait=wait,
            state=view.state,
            message=view.message,
        )

    async def run(
        self, arrived: Callable[[InterceptView], Awaitable[None]] | None = None
    ) -> InterceptView:
        """The intercept's view once `Done` and `arrived` (within the same wait) has run;
        ClusterError when `Stuck` or out of time."""
        try:
            async with asyncio.timeout(self._wait):
                view = await self._loop()
                if arrived is not None:
                    await arrived(view)
                return view
        except TimeoutError:
            stuck = arrival.decide(replace(self.snapshot, timed_out=True))
            assert isinstance(stuck, arrival.Stuck)
            raise ClusterError(stuck.message) from None
        finally:
            self._steps.pop(self._view.id, None)

    async def _loop(self) -> InterceptView:
        while True:
            self._view = view = self._source.intercept(self._view)
            seen = await self._source.workload()
            self.snapshot = now = replace(
                self.snapshot,
                state=view.state,
                message=view.message,
                pods=tuple(seen.pods),
                replicas=seen.replicas,
                replaces_pods=seen.replaces_pods,
                confirmed=False,
            )
            action = arrival.decide(now)
            if isinstance(action, arrival.Confirm):
                known, routed = await self._source.confirm()
                self.snapshot = now = replace(
                    now,
                    agents=frozenset(known),
                    routed=frozenset(routed) if routed is not None else None,
                    confirmed=True,
                )
                action = arrival.decide(now)
            match action:
                case arrival.Done():
                    return view
                case arrival.Stuck(message=message, restore=why):
                    if why:
                        await self._source.restore_template(why)
                    raise ClusterError(message)
                case arrival.Replace(pods=pods, webhook=webhook, step=step):
                    if webhook:
                        log.info("the webhook let %s pass without the agent: again", list(pods))
                    await self._source.replace(list(pods))
                    self.snapshot = replace(
                        now,
                        replaced=now.replaced | set(pods),
                        webhook_rounds=now.webhook_rounds + (1 if webhook else 0),
                    )
                    self._steps[view.id] = step
                case arrival.Wait(step=step):
                    self._steps[view.id] = step
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._source.changed()


class ClusterArrivals:
    """The arrival loop's view of the cluster: the workload's pods through the API
    server, the intercept's state and its agents through the manager."""

    def __init__(
        self,
        connection: ClusterConnection,
        request: InterceptRequest,
        service: str,
        admission: podsecurity.AdmissionGuard,
    ) -> None:
        self._connection = connection
        self._request = request
        self._service = service
        self._admission = admission

    def intercept(self, view: InterceptView) -> InterceptView:
        current = (i for i in self._connection.intercepts if i.id == view.id)
        return next(current, view)

    async def workload(self) -> agents.Arrival:
        seen = await agents.arrival(
            self._connection.api, self._request.namespace, self._request.workload
        )
        await self._admission.check(seen.failure)  # pods refused: rolled back, UserError
        return seen

    async def replace(self, pods: list[str]) -> None:
        await agents.replace_pods(self._connection.api, self._request.namespace, pods)

    async def confirm(self) -> tuple[set[str], set[str] | None]:
        connection = self._connection
        known = await connection.manager.agent_pods(
            connection.session_id, self._request.namespace, self._request.workload
        )
        routed = None
        if self._service:
            routed = await agents.serving_pods(
                connection.api, self._request.namespace, self._service
            )
        return known, routed

    async def changed(self) -> None:
        await self._connection.intercept_changed()

    async def restore_template(self, why: str) -> None:
        await self._admission.restore_template(why)
