"""The manager's intercept desk: intercept RPCs and watches (see core.intercepts for the
rules; hand-overs of intercepted connections are flows.handovers).

ManagerService delegates to one InterceptDesk. Watches are broadcast: every change bumps
a generation and wakes every watcher, which sends a fresh snapshot (and one at least
every KEEP_ALIVE seconds, so a dead stream is found out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from kubepresence.manager.core.intercepts import (
    Intercept,
    InterceptRegistry,
    InterceptState,
    Target,
)
from kubepresence.manager.core.previews import Ingress, PreviewRegistry, check_ingress
from kubepresence.protocol.errors import NotFoundError, UserError
from kubepresence.protocol.gen import common
from kubepresence.protocol.httpfilter import HttpFilter, describe, validate
from kubepresence.protocol.wire import filter_from_message, filter_to_message

log = logging.getLogger(__name__)

KEEP_ALIVE = 15.0

_STATE = {
    InterceptState.WAITING: common.InterceptState.WAITING,
    InterceptState.ACTIVE: common.InterceptState.ACTIVE,
    InterceptState.NO_AGENT: common.InterceptState.NO_AGENT,
    InterceptState.ERROR: common.InterceptState.ERROR,
}


def filter_of(message: common.HttpFilter | None) -> HttpFilter | None:
    """A personal intercept's filter, checked; None (a global intercept) when empty."""
    http_filter = filter_from_message(message)
    if http_filter is None:
        return None
    try:
        validate(http_filter)
    except ValueError as error:
        raise UserError(str(error)) from None
    return http_filter


class InterceptDesk:
    def __init__(self, preview_base: str = "") -> None:
        """`preview_base`: the gateway's URL (`http://host:port`); empty: no previews."""
        self.registry = InterceptRegistry()
        self.previews = PreviewRegistry()
        self._preview_base = preview_base
        self._generation = 0
        self._changed = asyncio.Event()
        self._environment: dict[str, dict[str, str]] = {}  # intercept id → app env
        # intercept id → agent pod → (pod IP, SFTP port): where `intercept --mount` mounts
        self._exports: dict[str, dict[str, tuple[str, int]]] = {}

    # --- changes and watches ----------------------------------------------------------

    def _bump(self) -> None:
        self._generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def _changes(self) -> AsyncIterator[None]:
        """Yield now, then after every change (or KEEP_ALIVE), until the caller stops."""
        while True:
            waiter = self._changed
            yield
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), KEEP_ALIVE)

    async def watch_client(self, client: str) -> AsyncIterator[list[common.InterceptInfo]]:
        async for _ in self._changes():
            yield [self.info(i) for i in self.registry.for_client(client)]

    async def watch_workload(
        self, namespace: str, workload: str
    ) -> AsyncIterator[list[common.InterceptInfo]]:
        async for _ in self._changes():
            yield [self.info(i) for i in self.registry.for_workload(namespace, workload)]

    def info(self, intercept: Intercept) -> common.InterceptInfo:
        return common.InterceptInfo(
            id=intercept.id,
            client_session_id=intercept.client,
            spec=common.InterceptSpec(
                name=intercept.name,
                namespace=intercept.target.namespace,
                workload_name=intercept.target.workload,
                service_port=intercept.target.port,
                local_host=intercept.local_host,
                local_port=intercept.local_port,
                http_filter=filter_to_message(intercept.filter),
            ),
            state=_STATE[intercept.state],
            message=intercept.message,
            environment=self._environment.get(intercept.id, {}),
            preview_url=self._preview_url(intercept),
            **self._export_of(intercept),
        )

    def _preview_url(self, intercept: Intercept) -> str:
        preview = self.previews.for_intercept(intercept.id)
        return "" if preview is None else f"{self._preview_base}/{preview.token}/"

    def _export_of(self, intercept: Intercept) -> dict[str, Any]:
        """The volume export of one accepting agent (the first by pod name), if any."""
        exports = self._exports.get(intercept.id, {})
        pods = sorted(set(exports) & intercept.accepted_by)
        if not pods:
            return {}
        pod_ip, sftp_port = exports[pods[0]]
        return {"pod_ip": pod_ip, "sftp_port": sftp_port}

    # --- intercept lifecycle ----------------------------------------------------------

    def create(self, client: str, spec: common.InterceptSpec) -> common.InterceptInfo:
        if not spec.namespace or not spec.workload_name or not spec.service_port:
            raise UserError("an intercept names a namespace, a workload and a port")
        if not 0 < spec.local_port < 65536:
            raise UserError(f"local port {spec.local_port} is out of range")
        http_filter = filter_of(spec.http_filter)
        ingress = self._preview_ingress(spec, http_filter)
        intercept = self.registry.create(
            client,
            spec.name or spec.workload_name,
            Target(spec.namespace, spec.workload_name, spec.service_port),
            (spec.local_host or "127.0.0.1", spec.local_port),
            http_filter,
        )
        log.info(
            "intercept %s created: %s, %s",
            intercept.id,
            intercept.target,
            "global" if http_filter is None else describe(http_filter),
        )
        if ingress is not None and http_filter is not None:
            self.previews.add(intercept.id, ingress, http_filter.headers[0])
            log.info("intercept %s previews %s", intercept.id, ingress.origin)
        self._bump()
        return self.info(intercept)

    def _preview_ingress(
        self, spec: common.InterceptSpec, http_filter: HttpFilter | None
    ) -> Ingress | None:
        """The ingress of the preview the spec asks for, checked; None: no preview."""
        if not spec.preview_ingress_host:
            return None
        if not self._preview_base:
            raise UserError("this traffic manager serves no preview URLs (no --preview-address)")
        if http_filter is None or not http_filter.headers:
            raise UserError(
                "a preview URL needs a personal intercept with a header filter "
                "(e.g. --http-header auto)"
            )
        port = spec.preview_ingress_port or (443 if spec.preview_ingress_tls else 80)
        check_ingress(spec.preview_ingress_host, port)
        return Ingress(spec.preview_ingress_host, port, spec.preview_ingress_tls)

    def remove(self, client: str, name: str) -> None:
        intercept = self.registry.remove(client, name)
        self._environment.pop(intercept.id, None)
        self._exports.pop(intercept.id, None)
        self.previews.drop_intercepts([intercept.id])
        log.info("intercept %s removed", intercept.id)
        self._bump()

    def client_gone(self, client: str) -> None:
        for intercept in self.registry.drop_client(client):
            self._environment.pop(intercept.id, None)
            self._exports.pop(intercept.id, None)
            self.previews.drop_intercepts([intercept.id])
            log.info("intercept %s ended with its client", intercept.id)
        self._bump()

    def agents_changed(self, namespace: str, workload: str, pods: set[str]) -> None:
        if self.registry.agents_changed(namespace, workload, pods):
            self._bump()

    def workload_deleted(self, namespace: str, workload: str) -> None:
        changed = self.registry.workload_deleted(namespace, workload)
        for intercept in changed:
            log.info(
                "intercept %s: its workload %s/%s was deleted", intercept.id, namespace, workload
            )
        if changed:
            self._bump()

    def review(
        self,
        intercept_id: str,
        pod: str,
        accepted: bool,
        message: str,
        environment: dict[str, str],
        export: tuple[str, int] | None = None,
    ) -> None:
        """An agent's review; `export` is its volume export (pod IP, SFTP port), if any."""
        self.registry.review(intercept_id, pod, accepted, message)
        if accepted and environment:
            self._environment[intercept_id] = dict(environment)
        if accepted and export is not None:
            self._exports.setdefault(intercept_id, {})[pod] = export
        self._bump()

    def active(self, intercept_id: str) -> Intercept:
        """The intercept an agent hands a connection of over; NotFoundError unless active."""
        intercept = self.registry.get(intercept_id)
        if intercept.state is not InterceptState.ACTIVE:
            raise NotFoundError(f"intercept {intercept.id} is not active")
        return intercept
