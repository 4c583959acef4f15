"""Installing, upgrading and removing the traffic manager through the Kubernetes API.

The objects come from `core.manifests` (the Helm chart's twin). This shell reads what the
cluster has, applies only what differs (server-side apply, field manager `kubepresence`, so
fields others own, like the webhook's CA bundle the manager writes, stay), removes objects
of the install that are no longer wanted, and waits, bounded, until the manager Deployment
has rolled out and, after a change, until its webhook injects agents. A manager installed by
Helm is left to Helm.

Objects are handled as plain dicts over the REST paths (kubernetes-asyncio's `call_api`),
so what is compared is exactly what the API server stores. Kubernetes API errors are
translated by `k8s/errors.py` (`api_refusals`: what was being done and who refused it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from kubepresence.protocol import version_of
from kubepresence.protocol.errors import ClusterError, UserError
from kubepresence.userd.core import helm
from kubepresence.userd.core.manifests import (
    FIELD_MANAGER,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_VERSION,
    MANAGED_BY,
    MANAGER,
    PART_OF,
    ManagerInstall,
    applied,
    cluster_scoped_name,
    has_agent,
    injection_probe,
    manager_objects,
    webhook_config_name,
)
from kubepresence.userd.k8s.errors import KubernetesNotFoundError, api_refusals

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 15.0
WAIT_TIMEOUT = 120.0
POLL_INTERVAL = 1.0
INJECTION_WAIT = 30.0
INJECTION_POLL = 0.2
HELM = "Helm"
# Waiting reasons of a container whose image the node cannot get.
IMAGE_MISSING = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
)
CANNOT_START = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)

Progress = Callable[[str], None]

# (apiVersion, kind) -> (plural, namespaced)
_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Service"): ("services", True),
    ("v1", "Pod"): ("pods", True),
    ("v1", "Event"): ("events", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("clusterrolebindings", False),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"): (
        "mutatingwebhookconfigurations",
        False,
    ),
}


@dataclass(frozen=True)
class Ref:
    """Which object: kind, name and (for namespaced kinds) namespace."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Ref:
        meta = obj["metadata"]
        return cls(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))

    @property
    def plural(self) -> str:
        return _KINDS[(self.api_version, self.kind)][0]

    def path(self) -> str:
        return f"{collection_path(self.api_version, self.kind, self.namespace)}/{self.name}"

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    plural, namespaced = _KINDS[(api_version, kind)]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespaced and namespace:
        return f"{root}/namespaces/{namespace}/{plural}"
    return f"{root}/{plural}"


class Rest:
    """Plain-dict access to the API server over kubernetes-asyncio's ApiClient."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api

    async def _call(
        self,
        method: str,
        path: str,
        doing: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        response_type: str = "object",
        missing_ok: bool = False,
    ) -> Any:
        try:
            with api_refusals(doing):
                return await self._api.call_api(
                    path,
                    method,
                    query_params=query or [],
                    header_params={"Accept": "application/json", "Content-Type": content_type},
                    body=body,
                    response_types_map={200: response_type, 201: response_type, 202: response_type},
                    auth_settings=["BearerToken"],
                    _return_http_data_only=True,
                    _request_timeout=REQUEST_TIMEOUT,
                )
        except KubernetesNotFoundError:
            if missing_ok:
                return None
            raise
        except (aiohttp.ClientError, TimeoutError) as error:
            reason = (
                f"no answer within {REQUEST_TIMEOUT:.0f} s"
                if isinstance(error, TimeoutError)
                else str(error) or type(error).__name__
            )
            raise ClusterError(f"cannot reach the API server to {doing}: {reason}") from error

    async def get(self, ref: Ref) -> dict[str, Any] | None:
        found = await self._call("GET", ref.path(), f"read {ref}", missing_ok=True)
        return dict(found) if found is not None else None

    async def items(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        labels: str | None = None,
        fields: str | None = None,
    ) -> list[dict[str, Any]]:
        query = []
        if labels:
            query.append(("labelSelector", labels))
        if fields:
            query.append(("fieldSelector", fields))
        where = f" in {namespace}" if namespace else ""
        found = await self._call(
            "GET",
            collection_path(api_version, kind, namespace),
            f"list {_KINDS[(api_version, kind)][0]}{where}",
            query=query,
        )
        return list(found.get("items") or [])

    async def apply(self, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply: create or update, owning exactly the fields in `obj`.

        With `dry_run` the API server answers with what the object would become.
        """
        ref = Ref.of(obj)
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        result = await self._call(
            "PATCH",
            ref.path(),
            f"apply {ref}{' (dry run)' if dry_run else ''}",
            query=query,
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        return dict(result)

    async def delete(self, ref: Ref) -> bool:
        """Delete (background propagation); False when it was already gone."""
        gone = await self._call(
            "DELETE",
            ref.path(),
            f"delete {ref}",
            body={"propagationPolicy": "Background"},
            missing_ok=True,
        )
        return gone is not None

    async def log_tail(self, namespace: str, pod: str, container: str, lines: int) -> str:
        text = await self._call(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
            f"read the log of pod {namespace}/{pod}",
            query=[("container", container), ("previous", "true"), ("tailLines", str(lines))],
            response_type="str",
            missing_ok=True,
        )
        return str(text or "")


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def _ours(obj: Mapping[str, Any]) -> bool:
    """Made by a kubepresence install (by this daemon or by the Helm chart)."""
    return _labels(obj).get(LABEL_PART_OF) == PART_OF


def _helm_release(obj: Mapping[str, Any]) -> str | None:
    if _labels(obj).get(LABEL_MANAGED_BY) != HELM:
        return None
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return str(annotations.get("meta.helm.sh/release-name", "?"))


def _deployment_ref(namespace: str) -> Ref:
    return Ref("apps/v1", "Deployment", MANAGER, namespace)


async def find_manager(api: client.ApiClient, namespace: str) -> str | None:
    """The version of the traffic manager installed in `namespace` (its label), or None."""
    deployment = await Rest(api).get(_deployment_ref(namespace))
    if deployment is None:
        return None
    return _labels(deployment).get(LABEL_VERSION, "unknown")


async def ensure_manager(
    api: client.ApiClient,
    install: ManagerInstall,
    progress: Progress,
    wait_seconds: float = WAIT_TIMEOUT,
) -> str:
    """Install or upgrade the traffic manager until the cluster has `install`, then wait.

    Returns "installed", "upgraded from <version>" (any change to an existing install) or
    "unchanged" (nothing written). Raises ClusterError when the cluster refuses or the
    manager does not become available within `wait_seconds`, saying why.
    """
    rest = Rest(api)
    ns = install.namespace
    current = await rest.get(_deployment_ref(ns))
    previous: str | None = None
    if current is not None:
        previous = _labels(current).get(LABEL_VERSION, "unknown")
        release = _helm_release(current)
        if release is not None:
            if previous != install.version:
                raise ClusterError(
                    f"the traffic manager in {ns} is version {previous}, installed by Helm "
                    f"(release {release}); upgrade it with helm to {install.version}"
                )
            progress(f"traffic manager {previous} in {ns} (Helm release {release})")
            await wait_available(rest, install, progress, wait_seconds)
            return "unchanged"

    changes: list[tuple[dict[str, Any], bool]] = []
    for obj in manager_objects(install):
        ref = Ref.of(obj)
        live = await rest.get(ref)
        if live is None:
            changes.append((obj, True))
        elif ref.kind == "Namespace":
            continue  # an existing namespace is the user's: used, never adopted
        elif not _ours(live):
            raise ClusterError(f"{ref} exists and does not belong to kubepresence: not touching it")
        elif not applied(live, obj) or await _would_change(rest, live, obj):
            changes.append((obj, False))
    stale = await _stale(rest, install)

    if not changes and not stale:
        progress(f"traffic manager {install.version} in {ns} is up to date")
        await wait_available(rest, install, progress, wait_seconds)
        return "unchanged"
    for obj, new in changes:
        progress(f"{'creating' if new else 'updating'} {Ref.of(obj)}")
        await rest.apply(obj)
    for ref in stale:
        progress(f"removing {ref}")
        await rest.delete(ref)
    await wait_available(rest, install, progress, wait_seconds)
    await wait_injecting(rest, install, progress)
    return "installed" if previous is None else f"upgraded from {previous}"


async def complete_manager(
    api: client.ApiClient,
    install: ManagerInstall,
    progress: Progress,
    wait_seconds: float = WAIT_TIMEOUT,
) -> list[str]:
    """Make a manager of this version whole and wait until it is available: an install
    cut short (its client killed half-way) lacks the objects after the point it reached.
    Those are created; what exists is left as it is (its settings may be the admin's).
    Returns the objects created."""
    rest = Rest(api)
    created = []
    current = await rest.get(_deployment_ref(install.namespace))
    if current is not None and _helm_release(current) is None:
        for obj in manager_objects(install):
            ref = Ref.of(obj)
            if ref.kind == "Namespace":
                continue  # the Deployment lives in it
            try:
                live = await rest.get(ref)
            except ClusterError as error:  # e.g. may not read cluster-wide objects
                log.info("cannot check the install for missing objects: %s", error.message)
                break
            if live is None:
                progress(f"creating {ref}: an earlier install stopped before it")
                await rest.apply(obj)
                created.append(str(ref))
    await wait_available(rest, install, progress, wait_seconds)
    if created:
        await wait_injecting(rest, install, progress)
    return created


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {**obj, "metadata": meta}


async def _would_change(rest: Rest, live: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether applying would change the object, e.g. drop a field an earlier apply set.

    `applied` cannot see a field the install no longer sets; the API server's dry run can,
    since the field manager owns exactly what it applied.
    """
    return _comparable(await rest.apply(desired, dry_run=True)) != _comparable(live)


async def _stale(rest: Rest, install: ManagerInstall) -> list[Ref]:
    """Objects of this install that its current settings no longer want."""
    wanted = {Ref.of(obj) for obj in manager_objects(install)}
    candidates = [
        Ref(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            webhook_config_name(install.namespace),
        )
    ]
    found = [obj for ref in candidates if (obj := await rest.get(ref)) is not None]
    found += await _roles_everywhere(rest, install.namespace)
    return [Ref.of(obj) for obj in found if _ours(obj) and Ref.of(obj) not in wanted]


async def _roles_everywhere(rest: Rest, namespace: str) -> list[dict[str, Any]]:
    """The install's Roles and RoleBindings in any namespace (they carry its name)."""
    name = f"metadata.name={cluster_scoped_name(namespace)}"
    api_version = "rbac.authorization.k8s.io/v1"
    found: list[dict[str, Any]] = []
    for kind in ("RoleBinding", "Role"):
        items = await rest.items(
            api_version, kind, labels=f"{LABEL_PART_OF}={PART_OF}", fields=name
        )
        # Items of a list carry no apiVersion/kind.
        found.extend({**item, "apiVersion": api_version, "kind": kind} for item in items)
    return found


def _rolled_out(deployment: Mapping[str, Any]) -> bool:
    """Like `kubectl rollout status`: the new pods are all there and available, no old ones."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    want = spec.get("replicas", 1)
    return bool(
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) == want
        and status.get("replicas", 0) == want
        and status.get("availableReplicas", 0) == want
    )


async def wait_available(
    rest: Rest, install: ManagerInstall, progress: Progress, wait_seconds: float = WAIT_TIMEOUT
) -> None:
    """Wait until the manager Deployment has rolled out; fail early when it cannot."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    ns = install.namespace
    said_waiting = False
    while True:
        deployment = await rest.get(_deployment_ref(ns))
        if deployment is None:
            raise ClusterError(f"the traffic manager Deployment in {ns} disappeared")
        if _rolled_out(deployment):
            progress(f"traffic manager {install.version} in {ns} is available")
            return
        for condition in deployment.get("status", {}).get("conditions") or []:
            if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
                raise ClusterError(
                    f"the traffic manager's pods cannot be created in {ns}: "
                    f"{condition.get('message', condition.get('reason'))}"
                )
        pods = await _manager_pods(rest, install)
        problem = await _pod_problem(rest, install, pods)
        if problem:
            raise ClusterError(problem)
        if loop.time() >= deadline:
            raise ClusterError(await _timeout_reason(rest, install, pods, wait_seconds))
        if not said_waiting:
            progress(f"waiting for the traffic manager in {ns} to become available")
            said_waiting = True
        await asyncio.sleep(POLL_INTERVAL)


async def wait_injecting(
    rest: Rest, install: ManagerInstall, progress: Progress, wait_seconds: float = INJECTION_WAIT
) -> None:
    """Wait until the API server's webhook calls reach the new manager.

    A manager pod is Ready before the cluster routes to it: the Service's endpoints and the
    node's proxy rules follow. Meanwhile the webhook fails open, and a pod created in that
    window (the user's first intercept, right after connect) would start without its agent.
    A dry-run pod shows when injection works. A cluster that does not let us ask, or a
    webhook that stays silent, gets a warning, not a failure: the manager still serves.
    """
    probe = injection_probe(install)
    if probe is None:
        return
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempts = 0
    while True:
        attempts += 1
        try:
            answer = await rest.apply(probe, dry_run=True)
        except ClusterError as error:
            progress(f"cannot check that agent injection works: {error}")
            return
        waited = loop.time() - started
        if has_agent(answer):
            log.info("agent injection answered after %.2f s (%d dry-run pods)", waited, attempts)
            progress(f"agent injection by the traffic manager in {install.namespace} works")
            return
        if waited >= wait_seconds:
            progress(
                f"warning: the agent-injection webhook of the traffic manager in "
                f"{install.namespace} did not answer within {wait_seconds:.0f} s; pods "
                "created now start without the traffic agent (see the manager's log)"
            )
            return
        await asyncio.sleep(INJECTION_POLL)


async def _manager_pods(rest: Rest, install: ManagerInstall) -> list[dict[str, Any]]:
    """The pods of the version being rolled out (old ones may be fine or going away)."""
    pods = await rest.items(
        "v1",
        "Pod",
        install.namespace,
        labels=f"{LABEL_NAME}={MANAGER},{LABEL_VERSION}={install.version}",
    )
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


async def _pod_problem(
    rest: Rest, install: ManagerInstall, pods: list[dict[str, Any]]
) -> str | None:
    for pod in pods:
        name = pod["metadata"]["name"]
        for status in pod.get("status", {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            detail = waiting.get("message", "")
            if reason in IMAGE_MISSING:
                return (
                    f"the traffic manager image {status.get('image', install.manager_image)} "
                    f"is not present in the cluster and cannot be pulled ({reason}: {detail})"
                )
            if reason in CANNOT_START:
                return f"the traffic manager container cannot start ({reason}: {detail})"
            if reason == "CrashLoopBackOff":
                last = (status.get("lastState") or {}).get("terminated") or {}
                tail = await rest.log_tail(install.namespace, name, "manager", 5)
                said = " | ".join(line for line in tail.splitlines() if line.strip())
                return (
                    f"the traffic manager keeps crashing in pod {install.namespace}/{name} "
                    f"(exit code {last.get('exitCode', '?')}); last log lines: {said or 'none'}"
                )
    return None


async def _timeout_reason(
    rest: Rest, install: ManagerInstall, pods: list[dict[str, Any]], waited: float
) -> str:
    ns = install.namespace
    events = await rest.items("v1", "Event", ns)
    if pods:
        # A settings change keeps the version: the old pod, still serving, carries the same
        # labels as the new one. The rollout waits for the newest.
        pod = max(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))
        name = pod["metadata"]["name"]
        phase = pod.get("status", {}).get("phase", "unknown")
        state = f"pod {name} is {phase}"
        events = [e for e in events if (e.get("involvedObject") or {}).get("name") == name]
    else:
        state = "no pod of it exists"
    events.sort(
        key=lambda e: str(
            e.get("lastTimestamp") or e.get("eventTime") or e["metadata"]["creationTimestamp"]
        )
    )
    last = f"{events[-1].get('reason')}: {events[-1].get('message')}" if events else "none"
    return (
        f"the traffic manager in {ns} is not available after {waited:.0f} s: "
        f"{state}; last event: {last}"
    )


async def manage_manager(
    api: client.ApiClient, action: str, install: ManagerInstall, progress: Progress
) -> str:
    """`kubepresence helm install|upgrade|uninstall` in `install.namespace` (the rules are
    `core.helm`'s); what was done, in one line."""
    namespace = install.namespace
    installed = await find_manager(api, namespace)
    ours = version_of("kubepresence-userd")
    refused = helm.refusal(action, installed, ours, namespace)
    if refused:
        raise UserError(refused)
    if action == "uninstall":
        removed = await uninstall_manager(api, namespace, progress)
        return helm.outcome(action, namespace, ours, str(len(removed)))
    return helm.outcome(action, namespace, ours, await ensure_manager(api, install, progress))


async def uninstall_manager(
    api: client.ApiClient,
    namespace: str,
    progress: Progress,
    wait_seconds: float = WAIT_TIMEOUT,
) -> list[str]:
    """Remove everything a kubepresence install in `namespace` made, and nothing else.

    Includes the cluster-scoped objects and Roles in other namespaces; the namespace itself
    goes only when the install created it and nothing else runs there. Waits until the
    manager's pods are gone. Returns what was removed. A Helm-made install is refused.
    """
    rest = Rest(api)
    deployment = await rest.get(_deployment_ref(namespace))
    release = _helm_release(deployment) if deployment is not None else None
    if release is not None:
        raise ClusterError(
            f"the traffic manager in {namespace} was installed by Helm: "
            f"remove it with `helm uninstall {release} -n {namespace}`"
        )
    refs = [
        Ref(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            webhook_config_name(namespace),
        ),
        _deployment_ref(namespace),
        Ref("v1", "Service", MANAGER, namespace),
    ]
    found = [obj for ref in refs if (obj := await rest.get(ref)) is not None]
    found += await _roles_everywhere(rest, namespace)
    rbac = "rbac.authorization.k8s.io/v1"
    for ref in (
        Ref(rbac, "ClusterRoleBinding", cluster_scoped_name(namespace)),
        Ref(rbac, "ClusterRole", cluster_scoped_name(namespace)),
        Ref("v1", "ServiceAccount", MANAGER, namespace),
    ):
        if (obj := await rest.get(ref)) is not None:
            found.append(obj)

    removed: list[str] = []
    for obj in found:
        ref = Ref.of(obj)
        if not _ours(obj) or _helm_release(obj) is not None:
            progress(f"leaving {ref}: not made by kubepresence")
            continue
        progress(f"removing {ref}")
        if await rest.delete(ref):
            removed.append(str(ref))
    await _wait_pods_gone(rest, namespace, progress, wait_seconds)
    if await _remove_own_namespace(rest, namespace, progress, wait_seconds):
        removed.append(str(Ref("v1", "Namespace", namespace)))
    return removed


async def _wait_until(
    what: str, check: Callable[[], Any], progress: Progress, wait_seconds: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    said = False
    while not await check():
        if loop.time() >= deadline:
            raise ClusterError(f"{what} did not happen within {wait_seconds:.0f} s")
        if not said:
            progress(f"waiting: {what}")
            said = True
        await asyncio.sleep(POLL_INTERVAL)


async def _wait_pods_gone(
    rest: Rest, namespace: str, progress: Progress, wait_seconds: float
) -> None:
    async def gone() -> bool:
        pods = await rest.items("v1", "Pod", namespace, labels=f"{LABEL_NAME}={MANAGER}")
        return not pods

    await _wait_until(
        f"the traffic manager's pods in {namespace} to go", gone, progress, wait_seconds
    )


async def _remove_own_namespace(
    rest: Rest, namespace: str, progress: Progress, wait_seconds: float
) -> bool:
    ref = Ref("v1", "Namespace", namespace)
    live = await rest.get(ref)
    if live is None or _labels(live).get(LABEL_MANAGED_BY) != MANAGED_BY or not _ours(live):
        return False
    others = [
        *await rest.items("v1", "Pod", namespace),
        *await rest.items("v1", "Service", namespace),
    ]
    if others:
        progress(f"keeping namespace {namespace}: it holds other pods or services")
        return False
    progress(f"removing {ref}")
    await rest.delete(ref)

    async def gone() -> bool:
        return await rest.get(ref) is None

    await _wait_until(f"namespace {namespace} to go", gone, progress, wait_seconds)
    return True
