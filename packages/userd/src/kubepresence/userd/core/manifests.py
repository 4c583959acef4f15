"""The traffic manager's Kubernetes objects, built in Python (the Helm chart's twin).

`deploy/helm/kubepresence` is what cluster admins install with `helm`; the user daemon
installs the same objects on demand from `manager_objects`. Both follow one contract, and an
end-to-end test renders the chart with `helm template` and compares object by object. The
only intended differences: Helm's bookkeeping labels (`helm.sh/chart`, and
`app.kubernetes.io/managed-by` says `Helm` there, `kubepresence` here), and the Namespace,
which the builder creates itself while Helm leaves it to `--create-namespace`.

Model: one install is a manager namespace plus settings (`ManagerInstall`). Objects in the
manager namespace carry fixed names (`kubepresence-manager`); cluster-scoped objects, and
Roles the install puts in other namespaces, carry the namespace in their name
(`kubepresence-manager-<namespace>`, `kubepresence-agent-injector-<namespace>`) so that two
installs in different namespaces never collide.

RBAC comes in two scopes:
- `cluster` (default): one ClusterRole + ClusterRoleBinding; the manager sees and can
  prepare workloads in every namespace.
- `namespaced`: a Role + RoleBinding in the manager's namespace and in each listed
  namespace for everything namespaced, plus a small ClusterRole for the reads that have no
  namespaced form (nodes for pod CIDRs, ServiceCIDRs, the manager's own and the listed
  Namespace objects, and the one webhook configuration it patches). The trade-off: the
  manager cannot see or intercept workloads outside the listed namespaces, and the webhook
  only injects agents there, but it also cannot read or patch anything else.

Pure: no I/O, no clock. `manager_objects` returns plain dicts in apply order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubepresence.protocol import version_of
from kubepresence.protocol.errors import UserError
from kubepresence.protocol.logs import LEVELS
from kubepresence.protocol.workloads import (
    AGENT_CONTAINER,
    INJECT_ENABLED,
    INJECT_MANAGER_NAMESPACE,
    INJECT_TRAFFIC_AGENT,
)

MANAGER = "kubepresence-manager"
AGENT_IMAGE_NAME = "kubepresence-agent"
PART_OF = "kubepresence"
MANAGED_BY = "kubepresence"
GRPC_PORT = 8081
WEBHOOK_PORT = 8443
PREVIEW_PORT = 8082  # the preview gateway of `intercept --preview-url`
WEBHOOK_SERVICE_PORT = 443
WEBHOOK_PATH = "/mutate-pods"
WEBHOOK_NAME = "agent-injector.kubepresence.io"
FIELD_MANAGER = "kubepresence"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

RBAC_SCOPES = ("cluster", "namespaced")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
# What the project's local cluster imports without a registry (the chart's default too).
DEFAULT_REGISTRY = "localhost"

# RFC 1123 label (namespace names); image tags and label values share a narrower set.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")
_REGISTRY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
# RFC 1123 subdomain (Secret names, for imagePullSecrets).
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?")


@dataclass(frozen=True)
class Resources:
    """The manager container's requests and limits; an empty string leaves one out."""

    requests_cpu: str = "50m"
    requests_memory: str = "64Mi"
    limits_cpu: str = ""
    limits_memory: str = "256Mi"

    def as_dict(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for group, cpu, memory in (
            ("limits", self.limits_cpu, self.limits_memory),
            ("requests", self.requests_cpu, self.requests_memory),
        ):
            values = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
            if values:
                out[group] = values
        return out


def _userd_version() -> str:
    return version_of("kubepresence-userd")


@dataclass(frozen=True)
class ManagerInstall:
    """What to install: the manager namespace and the settings the chart's values carry."""

    namespace: str = "kubepresence"
    version: str = field(default_factory=_userd_version)
    registry: str = DEFAULT_REGISTRY
    pull_policy: str = "IfNotPresent"
    # Secrets that let kubelet pull the images from a private registry (the chart's
    # image.pullSecrets): on the manager pod, and added by the webhook to the pods it
    # injects the agent into (the Secret must exist in their namespace too).
    image_pull_secrets: tuple[str, ...] = ()
    log_level: str = "info"
    session_ttl: int = 60
    webhook_enabled: bool = True
    rbac_scope: str = "cluster"
    rbac_namespaces: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    # The injected agent's requests and limits (the manager passes them to its webhook).
    agent_resources: Resources = field(
        default_factory=lambda: Resources(
            requests_cpu="10m", requests_memory="32Mi", limits_cpu="", limits_memory="128Mi"
        )
    )
    dial_timeout: int = 10  # seconds the manager gives a cluster destination to answer
    flow_idle_timeout: int = 600  # seconds before the manager ends an idle tunnel flow

    def __post_init__(self) -> None:
        # Callers may hand in any sequence; the install stays hashable and immutable.
        object.__setattr__(self, "rbac_namespaces", tuple(self.rbac_namespaces))
        object.__setattr__(self, "image_pull_secrets", tuple(self.image_pull_secrets))
        problem = self._problem()
        if problem:
            raise UserError(f"cannot install the traffic manager: {problem}")

    def _problem(self) -> str | None:
        for ns in (self.namespace, *self.rbac_namespaces):
            if not _DNS_LABEL.fullmatch(ns):
                return f"{ns!r} is not a valid namespace name"
        if not _TAG.fullmatch(self.version):
            return f"version {self.version!r} cannot be an image tag"
        if not _REGISTRY.fullmatch(self.registry) or self.registry.endswith("/"):
            return f"registry {self.registry!r} is not a registry host (e.g. ghcr.io/org)"
        if self.pull_policy not in PULL_POLICIES:
            return f"pull policy {self.pull_policy!r} is not one of {', '.join(PULL_POLICIES)}"
        for secret in self.image_pull_secrets:
            if len(secret) > 253 or not _DNS_SUBDOMAIN.fullmatch(secret):
                return f"image pull secret {secret!r} is not a valid Secret name"
        if self.log_level not in LEVELS:
            return f"log level {self.log_level!r} is not one of {', '.join(LEVELS)}"
        if isinstance(self.session_ttl, bool) or self.session_ttl <= 0:
            return f"session TTL {self.session_ttl!r} must be a positive number of seconds"
        if self.rbac_scope not in RBAC_SCOPES:
            return f"RBAC scope {self.rbac_scope!r} is not one of {', '.join(RBAC_SCOPES)}"
        if self.rbac_namespaces and self.rbac_scope != "namespaced":
            return "RBAC namespaces are only for the namespaced RBAC scope"
        if self.webhook_enabled and self.rbac_scope == "namespaced" and not self._targets:
            return "the namespaced RBAC scope with the webhook needs namespaces to inject into"
        for quantity in [*vars(self.resources).values(), *vars(self.agent_resources).values()]:
            if quantity and not _QUANTITY.fullmatch(quantity):
                return f"{quantity!r} is not a resource quantity"
        for name, seconds in (
            ("dial timeout", self.dial_timeout),
            ("flow idle timeout", self.flow_idle_timeout),
        ):
            if isinstance(seconds, bool) or seconds <= 0:
                return f"{name} {seconds!r} must be a positive number of seconds"
        return None

    @property
    def _targets(self) -> list[str]:
        return [ns for ns in self.rbac_namespaces if ns != self.namespace]

    @property
    def manager_image(self) -> str:
        return f"{self.registry}/{MANAGER}:{self.version}"

    @property
    def agent_image(self) -> str:
        return f"{self.registry}/{AGENT_IMAGE_NAME}:{self.version}"

    @property
    def cluster_scoped_name(self) -> str:
        """Name of the ClusterRole, ClusterRoleBinding and of Roles outside the namespace."""
        return cluster_scoped_name(self.namespace)

    @property
    def webhook_config_name(self) -> str:
        return webhook_config_name(self.namespace)

    @property
    def role_namespaces(self) -> tuple[str, ...]:
        """Namespaced scope: the manager's namespace first, then the listed ones, once each."""
        return tuple(dict.fromkeys((self.namespace, *self.rbac_namespaces)))


# The on-demand install's twins of the chart's image values, read from the environment the
# CLI forwards (`kubepresence connect` and `kubepresence helm install|upgrade`).
REGISTRY_VARIABLE = "KUBEPRESENCE_REGISTRY"
PULL_SECRETS_VARIABLE = "KUBEPRESENCE_IMAGE_PULL_SECRETS"


def install_from_environment(namespace: str, environment: Mapping[str, str]) -> ManagerInstall:
    """The install for a manager namespace with the image settings the caller's environment
    gives: KUBEPRESENCE_REGISTRY (image.registry, default localhost) and
    KUBEPRESENCE_IMAGE_PULL_SECRETS (image.pullSecrets, comma-separated). Bad values raise
    UserError before anything is applied."""
    registry = environment.get(REGISTRY_VARIABLE, "").strip()
    secrets = environment.get(PULL_SECRETS_VARIABLE, "")
    return ManagerInstall(
        namespace=namespace,
        registry=registry or DEFAULT_REGISTRY,
        image_pull_secrets=tuple(s.strip() for s in secrets.split(",") if s.strip()),
    )


def cluster_scoped_name(namespace: str) -> str:
    return f"{MANAGER}-{namespace}"


def webhook_config_name(namespace: str) -> str:
    return f"kubepresence-agent-injector-{namespace}"


def labels(version: str) -> dict[str, str]:
    """The labels every object of an install carries."""
    return {
        LABEL_NAME: MANAGER,
        LABEL_PART_OF: PART_OF,
        LABEL_VERSION: version,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def selector() -> dict[str, str]:
    """What the Deployment and the Service select the manager's pods by."""
    return {LABEL_NAME: MANAGER}


def manager_objects(install: ManagerInstall) -> list[dict[str, Any]]:
    """Every object of the install, in the order they can be applied."""
    objects = [
        _namespace(install),
        _meta_object(install, "v1", "ServiceAccount", MANAGER, install.namespace),
        *_rbac(install),
        _service(install),
        _deployment(install),
    ]
    if install.webhook_enabled:
        objects.append(_webhook_config(install))
    return objects


def _metadata(install: ManagerInstall, name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = labels(install.version)
    return meta


def _meta_object(
    install: ManagerInstall, api_version: str, kind: str, name: str, namespace: str | None
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": _metadata(install, name, namespace),
    }


def _namespace(install: ManagerInstall) -> dict[str, Any]:
    return _meta_object(install, "v1", "Namespace", install.namespace, None)


def _rule(
    groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": groups, "resources": resources}
    if names:
        rule["resourceNames"] = names
    rule["verbs"] = verbs
    return rule


READ = ["get", "list", "watch"]


def _namespaced_rules() -> list[dict[str, Any]]:
    return [
        _rule([""], ["pods", "services", "endpoints"], READ),
        # The manager finds the service CIDR by a dry-run create of an impossible ClusterIP.
        _rule([""], ["services"], ["create"]),
        _rule(["discovery.k8s.io"], ["endpointslices"], READ),
        _rule(["apps"], ["deployments", "replicasets", "statefulsets"], [*READ, "patch"]),
        _rule([""], ["events"], ["create", "patch"]),
    ]


def _webhook_rule(install: ManagerInstall) -> dict[str, Any]:
    # Only the install's own configuration: the manager writes its CA bundle there.
    return _rule(
        ["admissionregistration.k8s.io"],
        ["mutatingwebhookconfigurations"],
        ["get", "list", "patch"],
        [install.webhook_config_name],
    )


def _cluster_rules(install: ManagerInstall) -> list[dict[str, Any]]:
    return [
        _rule([""], ["nodes"], READ),
        _rule([""], ["namespaces"], READ),
        *_namespaced_rules(),
        _rule(["networking.k8s.io"], ["servicecidrs"], READ),
        _webhook_rule(install),
    ]


def _cluster_reads(install: ManagerInstall) -> list[dict[str, Any]]:
    """Namespaced scope: what has no namespaced form, and no more."""
    return [
        _rule([""], ["nodes"], READ),
        _rule([""], ["namespaces"], ["get"], list(install.role_namespaces)),
        _rule(["networking.k8s.io"], ["servicecidrs"], READ),
        _webhook_rule(install),
    ]


def _subjects(install: ManagerInstall) -> list[dict[str, Any]]:
    return [{"kind": "ServiceAccount", "name": MANAGER, "namespace": install.namespace}]


def _binding(
    install: ManagerInstall, kind: str, role_kind: str, name: str, namespace: str | None
) -> dict[str, Any]:
    return {
        **_meta_object(install, "rbac.authorization.k8s.io/v1", kind, name, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": _subjects(install),
    }


def _rbac(install: ManagerInstall) -> list[dict[str, Any]]:
    name = install.cluster_scoped_name
    api = "rbac.authorization.k8s.io/v1"
    cluster_rules = (
        _cluster_rules(install) if install.rbac_scope == "cluster" else _cluster_reads(install)
    )
    objects = [
        {**_meta_object(install, api, "ClusterRole", name, None), "rules": cluster_rules},
        _binding(install, "ClusterRoleBinding", "ClusterRole", name, None),
    ]
    if install.rbac_scope == "namespaced":
        for ns in install.role_namespaces:
            objects.append(
                {**_meta_object(install, api, "Role", name, ns), "rules": _namespaced_rules()}
            )
            objects.append(_binding(install, "RoleBinding", "Role", name, ns))
    return objects


def _service(install: ManagerInstall) -> dict[str, Any]:
    return {
        **_meta_object(install, "v1", "Service", MANAGER, install.namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(),
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "protocol": "TCP"},
                {
                    "name": "https-webhook",
                    "port": WEBHOOK_SERVICE_PORT,
                    "targetPort": WEBHOOK_PORT,
                    "protocol": "TCP",
                },
                {
                    "name": "http-preview",
                    "port": PREVIEW_PORT,
                    "targetPort": PREVIEW_PORT,
                    "protocol": "TCP",
                },
            ],
        },
    }


def manager_args(install: ManagerInstall) -> list[str]:
    args = [f"--grpc-address=0.0.0.0:{GRPC_PORT}"]
    if install.webhook_enabled:
        args.append(f"--webhook-address=0.0.0.0:{WEBHOOK_PORT}")
    args += [
        f"--preview-port={PREVIEW_PORT}",
        f"--log-level={install.log_level}",
        f"--session-ttl={install.session_ttl}",
        f"--dial-timeout={install.dial_timeout}",
        f"--flow-idle-timeout={install.flow_idle_timeout}",
        # As helm's toJson writes it: keys sorted, no spaces.
        "--agent-resources="
        + json.dumps(install.agent_resources.as_dict(), sort_keys=True, separators=(",", ":")),
    ]
    if install.rbac_scope == "namespaced":
        # The manager's watches look only where its Roles let it.
        args.append(f"--managed-namespaces={','.join(install.role_namespaces)}")
    return args


def _container(install: ManagerInstall) -> dict[str, Any]:
    return {
        "name": "manager",
        "image": install.manager_image,
        "imagePullPolicy": install.pull_policy,
        "command": ["python3", "-m", "kubepresence.manager"],
        "args": manager_args(install),
        "env": [
            {
                "name": "MANAGER_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "AGENT_IMAGE", "value": install.agent_image},
            *(
                [
                    {
                        "name": "AGENT_IMAGE_PULL_SECRETS",
                        "value": ",".join(install.image_pull_secrets),
                    }
                ]
                if install.image_pull_secrets
                else []
            ),
        ],
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "https-webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
            {"name": "http-preview", "containerPort": PREVIEW_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"tcpSocket": {"port": GRPC_PORT}, "periodSeconds": 5},
        "resources": install.resources.as_dict(),
        # The manager needs no privilege: it only listens on unprivileged ports, reads its
        # service-account token and writes logs to stdout.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
        },
    }


def _deployment(install: ManagerInstall) -> dict[str, Any]:
    return {
        **_meta_object(install, "apps/v1", "Deployment", MANAGER, install.namespace),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector()},
            "template": {
                "metadata": {"labels": labels(install.version)},
                "spec": {
                    "serviceAccountName": MANAGER,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [_container(install)],
                    **(
                        {"imagePullSecrets": [{"name": s} for s in install.image_pull_secrets]}
                        if install.image_pull_secrets
                        else {}
                    ),
                },
            },
        },
    }


def _namespace_selector(install: ManagerInstall) -> dict[str, Any]:
    if install.rbac_scope == "namespaced":
        # The manager may only touch the listed namespaces: inject there and nowhere else.
        expression = {
            "key": NAMESPACE_NAME_LABEL,
            "operator": "In",
            "values": [ns for ns in install.role_namespaces if ns != install.namespace],
        }
    else:
        expression = {
            "key": NAMESPACE_NAME_LABEL,
            "operator": "NotIn",
            "values": ["kube-system", install.namespace],
        }
    return {"matchExpressions": [expression]}


def _webhook_config(install: ManagerInstall) -> dict[str, Any]:
    return {
        **_meta_object(
            install,
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            install.webhook_config_name,
            None,
        ),
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                # caBundle stays out: the manager writes it at start-up (and an apply that
                # does not own it leaves it alone).
                "clientConfig": {
                    "service": {
                        "namespace": install.namespace,
                        "name": MANAGER,
                        "path": WEBHOOK_PATH,
                        "port": WEBHOOK_SERVICE_PORT,
                    }
                },
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": _namespace_selector(install),
                # A dead manager must never block the user's deployments.
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }


INJECTION_PROBE = "kubepresence-injection-probe"


def injection_probe(install: ManagerInstall) -> dict[str, Any] | None:
    """A pod to create with `dryRun=All`, never for real: the API server's answer carries the
    agent container once the install's webhook is reachable. None without a webhook.

    It goes to a namespace the webhook covers (`default`, or the first namespace of the
    namespaced scope) and names this install's manager, so no other manager injects it.
    """
    if not install.webhook_enabled:
        return None
    if install.rbac_scope == "namespaced":
        namespace = install.role_namespaces[1]  # validated: the webhook has one to cover
    else:
        namespace = "default" if install.namespace != "default" else "kube-public"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": INJECTION_PROBE,
            "namespace": namespace,
            "labels": labels(install.version),
            "annotations": {
                INJECT_TRAFFIC_AGENT: INJECT_ENABLED,
                INJECT_MANAGER_NAMESPACE: install.namespace,
            },
        },
        "spec": {"containers": [{"name": "probe", "image": install.agent_image}]},
    }


def has_agent(pod: Any) -> bool:
    """Whether a pod (as the API server returned it) carries the injected agent."""
    containers = (pod.get("spec") or {}).get("containers") if isinstance(pod, dict) else None
    return any(isinstance(c, dict) and c.get("name") == AGENT_CONTAINER for c in containers or [])


def applied(live: Any, desired: Any) -> bool:
    """Whether a live object already carries everything `desired` says.

    Fields the API server added (defaults, status, metadata) do not matter; lists must match
    element by element, since a list's length is part of what was asked for.
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and applied(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(applied(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)
