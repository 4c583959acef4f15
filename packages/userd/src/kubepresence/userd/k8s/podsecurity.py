"""Pod Security Admission around an intercept (the rules are in core.podsecurity).

Before anything is applied, `admission_guard` reads the target namespace's labels and
refuses a takeover its enforced level forbids, in one line. It also notes the workload's
injection annotations as they are, so that when the API server refuses the new pods after
all (userd may not read namespaces, or the cluster's default level is not in the labels),
`AdmissionGuard.check` can put them back — the workload returns to its previous pod
template, so its old pods stay and no agent is left behind — and say why in one line.
A Deployment or ReplicaSet says so in its ReplicaFailure condition; a StatefulSet only in
FailedCreate events (and it has already stopped the pod it replaces: it starts it again
from the restored template).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from kubepresence.protocol.errors import UserError
from kubepresence.protocol.workloads import (
    INJECT_MANAGER_NAMESPACE,
    INJECT_NUMERIC_PORTS,
    INJECT_TRAFFIC_AGENT,
    by_kind,
)
from kubepresence.userd.core.interceptports import Resolved
from kubepresence.userd.core.podsecurity import TakeoverMethod, decide, rejected_by_pod_security
from kubepresence.userd.k8s.agents import read_workload
from kubepresence.userd.k8s.errors import KubernetesError, KubernetesForbiddenError, api_errors

log = logging.getLogger(__name__)

# What an intercept may write on the pod template (manager: k8s/workloads.ensure_injected).
INJECTION_ANNOTATIONS = (INJECT_TRAFFIC_AGENT, INJECT_MANAGER_NAMESPACE, INJECT_NUMERIC_PORTS)


async def namespace_labels(api: client.ApiClient, namespace: str) -> dict[str, str] | None:
    """The namespace's labels; None when the user may not read the namespace."""
    try:
        with api_errors(f"cannot read namespace {namespace}"):
            found = await client.CoreV1Api(api).read_namespace(namespace)
    except KubernetesForbiddenError:
        return None
    return dict(found.metadata.labels or {})


def _patcher(apps: client.AppsV1Api, kind: str) -> Callable[..., Awaitable[Any]]:
    workload_kind = by_kind(kind)
    assert workload_kind is not None, kind  # read_workload found it among KINDS
    patch: Callable[..., Awaitable[Any]] = getattr(apps, workload_kind.call("patch"))
    return patch


@dataclass(frozen=True)
class AdmissionGuard:
    """What it takes to undo an intercept whose pods PodSecurity refuses."""

    api: client.ApiClient
    namespace: str
    kind: str
    name: str
    before: dict[str, str | None]  # the injection annotations of the template, as they were
    # A StatefulSet has no ReplicaFailure condition: its controller only records events.
    # The FailedCreate events seen before the intercept (uid, count); None: not read.
    events_before: frozenset[tuple[str, int]] | None = None

    @property
    def title(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    async def check(self, failure: str) -> None:
        """`failure`: the workload's pod-creation failure ("" when none). When PodSecurity
        refused the pods, put the template back and raise UserError (one line)."""
        if not failure and self.events_before is not None:
            failure = await _new_failed_create(
                self.api, self.namespace, self.name, self.events_before
            )
        if not failure or not rejected_by_pod_security(failure):
            return
        await self.restore_template(
            f"the API server refused the agent's pods of {self.namespace}/{self.title} ({failure})"
        )
        log.info("%s/%s: pods refused by PodSecurity, template restored", self.namespace, self.name)
        raise UserError(
            f"the API server refused the agent's pods of {self.namespace}/{self.title}, "
            f"so the intercept was rolled back: {failure}"
        )

    async def restore_template(self, why: str) -> None:
        """Put the template's injection annotations back as they were before the intercept
        (its pods roll back to the template they had). `why`: for the error if it fails."""
        patch = {"spec": {"template": {"metadata": {"annotations": dict(self.before)}}}}
        with api_errors(f"{why}, and restoring its pod template failed"):
            await _patcher(client.AppsV1Api(self.api), self.kind)(self.name, self.namespace, patch)


async def _failed_creates(
    api: client.ApiClient, namespace: str, name: str
) -> list[tuple[str, int, str]] | None:
    """(uid, count, message) of the StatefulSet's FailedCreate events; None: may not list."""
    selector = f"involvedObject.kind=StatefulSet,involvedObject.name={name},reason=FailedCreate"
    try:
        with api_errors(f"cannot list the events of statefulset {namespace}/{name}"):
            events = await client.CoreV1Api(api).list_namespaced_event(
                namespace, field_selector=selector
            )
    except KubernetesError as error:
        log.info("%s", error.message)
        return None
    return [(str(e.metadata.uid), int(e.count or 1), str(e.message or "")) for e in events.items]


async def _new_failed_create(
    api: client.ApiClient, namespace: str, name: str, before: frozenset[tuple[str, int]]
) -> str:
    """The message of a FailedCreate event of the StatefulSet that came after `before`."""
    for uid, count, message in await _failed_creates(api, namespace, name) or []:
        if (uid, count) not in before:
            return message
    return ""


async def admission_guard(
    api: client.ApiClient, namespace: str, name: str, resolved: Resolved
) -> AdmissionGuard:
    """Refuse (UserError, one line) an intercept whose takeover the namespace's Pod Security
    level forbids; otherwise what it takes to roll back if the pods are refused anyway."""
    kind, workload = await read_workload(api, namespace, name)
    title = f"{kind.lower()}/{name}"
    labels = await namespace_labels(api, namespace)
    if labels is None:
        log.info(
            "may not read namespace %s: Pod Security is checked when its pods are created",
            namespace,
        )
    else:
        takeover = TakeoverMethod.REDIRECT if resolved.numeric else TakeoverMethod.RENAME
        decision = decide(namespace, labels, takeover, resolved.port, title, resolved.service)
        log.info(
            "namespace %s enforces Pod Security %s: %s takeover %s",
            namespace,
            decision.level.value,
            takeover.value,
            "allowed" if decision.allowed else "refused",
        )
        if not decision.allowed:
            raise UserError(decision.reason)
    annotations = workload.spec.template.metadata.annotations or {}
    before = {key: annotations.get(key) for key in INJECTION_ANNOTATIONS}
    events_before = None
    if kind == "StatefulSet":
        seen = await _failed_creates(api, namespace, name)
        if seen is not None:
            events_before = frozenset((uid, count) for uid, count, _ in seen)
    return AdmissionGuard(api, namespace, kind, name, before, events_before)
