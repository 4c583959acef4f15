"""Agent injection: which pods get the traffic agent, and the JSON patch that adds it.

Theory of operation. The API server sends every pod CREATE in the watched namespaces to
the manager's mutating webhook as an AdmissionReview (v1). `review` decides and answers:

| the pod …                                                   | answer                    |
|-------------------------------------------------------------|---------------------------|
| is not a pod CREATE, or the review is malformed             | allowed, no patch         |
| lacks `kubepresence.io/inject-traffic-agent: enabled`        | allowed, no patch         |
| names another manager (`kubepresence.io/manager-namespace`) | allowed, no patch         |
| already has the agent (container or init container by name) | allowed, no patch         |
| names an app container it does not have, or carries a bad   | allowed, no patch (and    |
|   `kubepresence.io/inject-numeric-ports` annotation          |   the reason is logged)   |
| otherwise                                                   | allowed, with the patch   |

Every answer allows the pod: the webhook fails open, like its `failurePolicy: Ignore`.

Port takeover (DESIGN §5), for the app container (the first container, or the one named
by `kubepresence.io/inject-container`):
- every named TCP container port is renamed in the app container (`http` → `kp-http`, or
  `kp-port-<i>` when the prefixed name would pass 15 characters) and the agent declares a
  port of its own (9900 and up, skipping ports the pod already declares) under the
  original name, so a Service whose targetPort names the port reaches the agent. Probes
  and lifecycle handlers of the app container that name a renamed port follow the rename
  (they keep reaching the app directly);
- every port listed in the pod annotation `kubepresence.io/inject-numeric-ports`
  (comma-separated numbers, e.g. `"8080,9000"`) is for Services whose targetPort is a
  number: an init container (the agent image, NET_ADMIN) redirects inbound TCP for that
  port to the agent's port (iptables REDIRECT in PREROUTING); the agent forwards to the
  app on 127.0.0.1. A numeric port that is also a named port shares one agent port.
  The kubelet's probes and lifecycle handlers of a redirected port would be redirected
  too, and intercepted: the pod's readiness would hang on the workstation's answer to
  `/ready` (a 404 from a dev server, and the Service drops the pod). They move to a probe
  port of their own (the next free one), which the init container redirects to the app
  port itself: the kubelet keeps asking the app.

The agent container copies the app container's env and envFrom (it carries the app's
environment; a resourceFieldRef that names no container is made to name the app container,
so the kubelet computes the app's value, not the agent's) and its volume mounts, each
under `/kubepresence/app-mounts/<mountPath>` (so they cannot shadow the agent's own files;
read-only ones stay read-only; the service account token too: the app sees it, so the user's
process needs it). When there are mounts,
the agent exports that root over SFTP on `sftp_port` (8022, or the next port no container
of the pod declares) for `intercept --mount`. Its own settings travel in `KP_AGENT_*` variables so
they never collide with the app's (the echo test app itself defines POD_NAME): the pod's
identity from the downward API (KP_AGENT_POD_NAME, KP_AGENT_POD_NAMESPACE, KP_AGENT_POD_IP)
and KP_AGENT_CONFIG, a JSON document with the workload, the app container and the ports
(both defined, with the agent's reading of them, in `kubepresence.protocol.agents`).

Pure: no I/O, no clock. The shell (`webhook/serving.py`) hands in the request body.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubepresence.protocol import agents
from kubepresence.protocol.agents import AgentSettings, PortTakeover
from kubepresence.protocol.workloads import (
    AGENT_CONTAINER,
    INJECT_CONTAINER,
    INJECT_MANAGER_NAMESPACE,
    INJECT_NUMERIC_PORTS,
    INJECT_TRAFFIC_AGENT,
)

INJECT_ANNOTATION = INJECT_TRAFFIC_AGENT
INJECT_ENABLED = "enabled"
NUMERIC_PORTS_ANNOTATION = INJECT_NUMERIC_PORTS
CONTAINER_ANNOTATION = INJECT_CONTAINER
INJECTED_ANNOTATION = "kubepresence.io/traffic-agent"

INIT_CONTAINER = "kubepresence-init"
AGENT_PORT_BASE = 9900
SFTP_PORT = 8022
RENAME_PREFIX = "kp-"
MAX_PORT_NAME = 15
APP_MOUNTS_ROOT = "/kubepresence/app-mounts"
# Where both agent images (deploy/images/agent.Dockerfile, the cluster's imagebuild) install
# the agent. The agent's interpreter runs isolated (-I: no PYTHON* variable counts), since the
# agent container carries the app's env: an app's PYTHONPATH or PYTHONHOME would be the
# agent's, and hide its packages (the agent crashed at import).
AGENT_SITE = "/opt/kubepresence/site-packages"
AGENT_COMMAND = (
    "python3",
    "-I",
    "-u",
    "-c",
    f"import runpy, sys; sys.path.insert(0, {AGENT_SITE!r}); "
    "runpy.run_module('kubepresence.agent', run_name='__main__', alter_sys=True)",
)
MANAGER_SERVICE = "kubepresence-manager"
MANAGER_GRPC_PORT = 8081
ADMISSION_API = "admission.k8s.io/v1"

_PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
_HANDLER_KINDS = ("httpGet", "tcpSocket", "grpc")


@dataclass(frozen=True)
class InjectionSettings:
    """What the manager knows when it injects: the agent image and where it listens."""

    agent_image: str
    manager_namespace: str
    pull_policy: str = "IfNotPresent"
    # Secrets (in the workload's namespace) for pulling the agent image from a private
    # registry: added to the pod's imagePullSecrets where it lacks them.
    image_pull_secrets: tuple[str, ...] = ()
    log_level: str = "info"
    agent_resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"memory": "128Mi"},
        }
    )

    @property
    def manager_address(self) -> str:
        return f"{MANAGER_SERVICE}.{self.manager_namespace}:{MANAGER_GRPC_PORT}"


@dataclass(frozen=True)
class Verdict:
    """The webhook's answer: always allowed; `patch` is None when the pod stays untouched."""

    uid: str
    patch: list[dict[str, Any]] | None
    reason: str  # why (for the log)
    problem: bool = False  # the pod wanted the agent, or the review was broken: say so

    def response(self) -> dict[str, Any]:
        """The AdmissionReview the API server expects back."""
        answer: dict[str, Any] = {"uid": self.uid, "allowed": True}
        if self.patch is not None:
            answer["patchType"] = "JSONPatch"
            answer["patch"] = base64.b64encode(json.dumps(self.patch).encode()).decode()
        return {"apiVersion": ADMISSION_API, "kind": "AdmissionReview", "response": answer}


class NotInjectedError(Exception):
    """The pod cannot get the agent as it is; it passes untouched (reason in the message)."""


def review(body: bytes, settings: InjectionSettings) -> Verdict:
    """Decide about one AdmissionReview request body (see the module docstring)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Verdict("", None, "malformed AdmissionReview: not JSON", problem=True)
    request = document.get("request") if isinstance(document, dict) else None
    if not isinstance(request, dict):
        return Verdict("", None, "malformed AdmissionReview: no request", problem=True)
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        return Verdict("", None, "malformed AdmissionReview: no uid", problem=True)
    try:
        return Verdict(uid, *_decide(request, settings))
    except NotInjectedError as error:
        return Verdict(uid, None, str(error), problem=True)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
        # The pod is not shaped as expected: let it pass rather than block the user.
        return Verdict(uid, None, f"malformed pod ({type(error).__name__}: {error})", problem=True)


def _decide(
    request: dict[str, Any], settings: InjectionSettings
) -> tuple[list[dict[str, Any]] | None, str]:
    kind = request.get("kind") or {}
    if (
        request.get("operation") != "CREATE"
        or kind.get("kind") != "Pod"
        or kind.get("group", "") != ""
    ):
        return None, "not a pod creation"
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise NotInjectedError("malformed AdmissionReview: no pod object")
    namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or ""
    if namespace == settings.manager_namespace:
        return None, "the manager's own namespace"
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if annotations.get(INJECT_ANNOTATION) != INJECT_ENABLED:
        return None, "not enabled for injection"
    owner = annotations.get(INJECT_MANAGER_NAMESPACE, "")
    if owner and owner != settings.manager_namespace:
        return None, f"for the traffic manager in namespace {owner}"
    spec = pod["spec"]
    containers = spec.get("containers") or []
    inits = spec.get("initContainers") or []
    if any(c.get("name") in (AGENT_CONTAINER, INIT_CONTAINER) for c in [*containers, *inits]):
        return None, "already has the agent"
    if not containers:
        raise NotInjectedError("the pod has no containers")
    return build_patch(pod, settings), "injected"


def parse_numeric_ports(text: str) -> list[int]:
    """`"8080, 9000"` → [8080, 9000]; anything else raises NotInjectedError."""
    ports: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise NotInjectedError(
                f"{NUMERIC_PORTS_ANNOTATION}: {item!r} is not a port number (1-65535)"
            )
        if int(item) not in ports:
            ports.append(int(item))
    return ports


def renamed(name: str, index: int, taken: set[str]) -> str:
    """The app port's new name: `kp-<name>`, or `kp-port-<i>` past 15 characters."""
    candidates = [f"{RENAME_PREFIX}{name}", f"{RENAME_PREFIX}port-{index}"]
    for candidate in candidates:
        if len(candidate) <= MAX_PORT_NAME and candidate not in taken:
            return candidate
    n = index
    while True:  # bounded by the number of names taken
        candidate = f"{RENAME_PREFIX}p{n}"
        if candidate not in taken:
            return candidate
        n += 1


def _app_container(pod: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    containers = pod["spec"]["containers"]
    wanted = ((pod.get("metadata") or {}).get("annotations") or {}).get(CONTAINER_ANNOTATION)
    if not wanted:
        return 0, containers[0]
    for index, container in enumerate(containers):
        if container.get("name") == wanted:
            return index, container
    raise NotInjectedError(f"{CONTAINER_ANNOTATION}: the pod has no container {wanted!r}")


def _numeric_ports(pod: Mapping[str, Any]) -> list[int]:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return parse_numeric_ports(str(annotations.get(NUMERIC_PORTS_ANNOTATION, "")))


def _all_containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*pod["spec"]["containers"], *(pod["spec"].get("initContainers") or [])]


class _PortPicker:
    """Ports for the agent from AGENT_PORT_BASE up, none the pod declares or redirects."""

    def __init__(self, pod: Mapping[str, Any], also_taken: set[int] | None = None) -> None:
        containers = _all_containers(pod)
        declared = {int(p["containerPort"]) for c in containers for p in c.get("ports") or []}
        self._taken = declared | set(_numeric_ports(pod)) | (also_taken or set())
        self._next = AGENT_PORT_BASE

    def __call__(self) -> int:
        while self._next in self._taken:
            self._next += 1
        if self._next > 65535:
            raise NotInjectedError("no free port for the agent")
        chosen = self._next
        self._next += 1
        return chosen


def plan_takeovers(pod: Mapping[str, Any]) -> tuple[list[PortTakeover], dict[str, str]]:
    """Which app ports the agent takes over, on which agent ports, and the new names of
    the app's named ports (original name → new name; see the docstring)."""
    numeric = _numeric_ports(pod)
    _, app = _app_container(pod)
    containers = _all_containers(pod)
    names = {p["name"] for c in containers for p in c.get("ports") or [] if p.get("name")}
    agent_port = _PortPicker(pod)

    takeovers: list[PortTakeover] = []
    renames: dict[str, str] = {}
    for index, port in enumerate(app.get("ports") or []):
        name = port.get("name")
        if not name or port.get("protocol", "TCP") != "TCP":
            continue
        renames[name] = renamed(name, index, names)
        names.add(renames[name])
        app_port = int(port["containerPort"])
        takeovers.append(
            PortTakeover(
                name=name,
                app_port=app_port,
                agent_port=agent_port(),
                redirected=app_port in numeric,
            )
        )
    named_ports = {t.app_port for t in takeovers}
    for number in numeric:
        if number in named_ports:
            continue
        takeovers.append(
            PortTakeover(name="", app_port=number, agent_port=agent_port(), redirected=True)
        )
    return takeovers, renames


def workload_of(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name) of the workload that owns the pod; ("", "") for a bare pod.

    A ReplicaSet whose name ends in the pod's `pod-template-hash` belongs to a Deployment.
    """
    meta = pod.get("metadata") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
    if not owners:
        return "", ""
    owner = owners[0]
    kind, name = str(owner.get("kind", "")), str(owner.get("name", ""))
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        return "Deployment", name[: -len(template_hash) - 1]
    return kind, name


def _pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) from path parts."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _handler_actions(container: Mapping[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    """(path in the container, action) of every probe's and lifecycle handler's port user."""
    handlers: list[tuple[tuple[str, ...], Any]] = [
        ((probe,), container.get(probe)) for probe in _PROBES
    ]
    lifecycle = container.get("lifecycle") or {}
    handlers += [(("lifecycle", hook), lifecycle.get(hook)) for hook in ("postStart", "preStop")]
    return [
        ((*path, kind), handler[kind])
        for path, handler in handlers
        if isinstance(handler, dict)
        for kind in _HANDLER_KINDS
        if isinstance(handler.get(kind), dict)
    ]


def _port_number(container: Mapping[str, Any], port: Any) -> int | None:
    """The number a handler's `port` (a number, or a name of the container's) stands for."""
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for declared in container.get("ports") or []:
            number = declared.get("containerPort")
            if declared.get("name") == port and isinstance(number, int):
                return number
    return None


def plan_probe_ports(pod: Mapping[str, Any], takeovers: Sequence[PortTakeover]) -> dict[int, int]:
    """Redirected app port -> the probe port its handlers move to (only ports they use)."""
    redirected = {t.app_port for t in takeovers if t.redirected}
    _, app = _app_container(pod)
    pick = _PortPicker(pod, also_taken={t.agent_port for t in takeovers})
    probe_ports: dict[int, int] = {}
    for _, action in _handler_actions(app):
        number = _port_number(app, action.get("port"))
        if number is not None and number in redirected and number not in probe_ports:
            probe_ports[number] = pick()
    return probe_ports


def _handler_patches(
    container: Mapping[str, Any],
    index: int,
    renames: Mapping[str, str],
    probe_ports: Mapping[int, int],
) -> list[dict[str, Any]]:
    """Handlers of a redirected port move to its probe port; ones that name a renamed port
    follow the rename."""
    ops: list[dict[str, Any]] = []
    for path, action in _handler_actions(container):
        port = action.get("port")
        number = _port_number(container, port)
        value: int | str
        if number is not None and number in probe_ports:
            value = probe_ports[number]
        elif port in renames:
            value = renames[port]
        else:
            continue
        pointer = _pointer("spec", "containers", index, *path, "port")
        ops.append({"op": "replace", "path": pointer, "value": value})
    return ops


def _agent_mounts(app: Mapping[str, Any]) -> list[dict[str, Any]]:
    mounts = []
    for mount in app.get("volumeMounts") or []:
        copied: dict[str, Any] = {
            "name": mount["name"],
            "mountPath": APP_MOUNTS_ROOT + "/" + str(mount["mountPath"]).lstrip("/"),
        }
        if mount.get("readOnly"):
            copied["readOnly"] = True
        for key in ("subPath", "subPathExpr"):
            if mount.get(key):
                copied[key] = mount[key]
        if mount.get("mountPropagation") == "HostToContainer":
            copied["mountPropagation"] = "HostToContainer"
        mounts.append(copied)
    return mounts


def sftp_port(pod: Mapping[str, Any], takeovers: Sequence[PortTakeover]) -> int:
    """The port the agent exports the app's volumes on; 0 when the app has none."""
    _, app = _app_container(pod)
    if not app.get("volumeMounts"):
        return 0
    taken = {int(p["containerPort"]) for c in _all_containers(pod) for p in c.get("ports") or []}
    taken |= {t.agent_port for t in takeovers} | {t.app_port for t in takeovers}
    port = SFTP_PORT
    while port in taken:
        port += 1
    return port


@dataclass(frozen=True)
class PortPlan:
    """Every port the injection decides, decided once."""

    takeovers: list[PortTakeover]
    renames: dict[str, str]  # the app's named ports: original name -> new name
    probe_ports: dict[int, int]  # redirected app port -> its handlers' probe port
    sftp_port: int  # 0: no volumes to export
    # The agent's readiness probe's port, never a takeover port (while intercepted, a
    # probe there would be a connection to the workstation every two seconds); 0: none.
    health_port: int
    # The agent's Agent service on the pod's loopback, for clients that port-forward.
    direct_port: int = 0


def plan_ports(pod: Mapping[str, Any]) -> PortPlan:
    takeovers, renames = plan_takeovers(pod)
    probe_ports = plan_probe_ports(pod, takeovers)
    sftp = sftp_port(pod, takeovers)
    health = direct = 0
    if takeovers:
        taken = {t.agent_port for t in takeovers} | set(probe_ports.values()) | {sftp}
        picker = _PortPicker(pod, also_taken=taken)
        health, direct = picker(), picker()
    return PortPlan(takeovers, renames, probe_ports, sftp, health, direct)


def agent_settings(pod: Mapping[str, Any], plan: PortPlan) -> AgentSettings:
    """What the agent reads from KP_AGENT_CONFIG."""
    kind, name = workload_of(pod)
    _, app = _app_container(pod)
    return AgentSettings(
        workload_kind=kind,
        workload_name=name,
        container=app["name"],
        ports=tuple(plan.takeovers),
        app_mounts_root=APP_MOUNTS_ROOT,
        sftp_port=plan.sftp_port,
        health_port=plan.health_port,
        direct_port=plan.direct_port,
        app_env_names=tuple(e["name"] for e in app.get("env") or [] if e.get("name")),
    )


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def app_env(app: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The app container's env entries as the agent container carries them.

    The same entries in the same order give the same values in both containers (the kubelet
    expands `$(VAR)` from earlier entries and the Service variables only, fieldRef names the
    pod), except resourceFieldRef: without `containerName` it reads the container it is in.
    Naming the app container makes the kubelet compute the app's value, with the app's
    divisor and, for an unset limit, the node's allocatable, as it does for the app."""
    entries = []
    for entry in app.get("env") or []:
        ref = (entry.get("valueFrom") or {}).get("resourceFieldRef")
        if isinstance(ref, Mapping) and not ref.get("containerName"):
            entry = {
                **entry,
                "valueFrom": {
                    **entry["valueFrom"],
                    "resourceFieldRef": {**ref, "containerName": app["name"]},
                },
            }
        entries.append(dict(entry))
    return entries


def agent_container(
    pod: Mapping[str, Any], plan: PortPlan, settings: InjectionSettings
) -> dict[str, Any]:
    _, app = _app_container(pod)
    env = [
        *app_env(app),
        *(_field_env(name, path) for name, path in agents.POD_FIELDS.items()),
        {"name": agents.CONFIG_ENV, "value": agents.encode(agent_settings(pod, plan))},
    ]
    ports = []
    for takeover in plan.takeovers:
        port: dict[str, Any] = {"containerPort": takeover.agent_port, "protocol": "TCP"}
        if takeover.name:
            port = {"name": takeover.name, **port}
        ports.append(port)
    container: dict[str, Any] = {
        "name": AGENT_CONTAINER,
        "image": settings.agent_image,
        "imagePullPolicy": settings.pull_policy,
        "command": list(AGENT_COMMAND),
        "args": [
            f"--manager-address={settings.manager_address}",
            f"--log-level={settings.log_level}",
        ],
        "env": env,
    }
    if app.get("envFrom"):
        container["envFrom"] = list(app["envFrom"])
    if ports:
        container["ports"] = ports
        # The pod is not Ready before the agent listens: all of its traffic passes it. (The
        # agent opens its health port once its takeover ports listen.)
        container["readinessProbe"] = {
            "tcpSocket": {"port": plan.health_port},
            "periodSeconds": 2,
        }
    mounts = _agent_mounts(app)
    if mounts:
        container["volumeMounts"] = mounts
    container["resources"] = {k: dict(v) for k, v in settings.agent_resources.items()}
    security: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    # The app's user, so that its files (the exported mounts) are the agent's files too.
    app_security = app.get("securityContext") or {}
    pod_security = pod["spec"].get("securityContext") or {}
    for key in ("runAsUser", "runAsGroup"):
        value = app_security.get(key, pod_security.get(key))
        if value is not None:
            security[key] = value
    if "runAsUser" not in security:
        security["runAsUser"] = 1000
        security["runAsGroup"] = security.get("runAsGroup", 1000)
    # What the "restricted" Pod Security Standard asks of a container, where it can be met.
    if security["runAsUser"] != 0:
        security["runAsNonRoot"] = True
    security["seccompProfile"] = {"type": "RuntimeDefault"}
    container["securityContext"] = security
    return container


def init_container(plan: PortPlan, settings: InjectionSettings) -> dict[str, Any]:
    """The init container that redirects numeric ports to the agent, and probe ports to
    the app (iptables, NET_ADMIN)."""
    redirects = [f"{t.app_port}:{t.agent_port}" for t in plan.takeovers if t.redirected]
    redirects += [f"{probe}:{app_port}" for app_port, probe in plan.probe_ports.items()]
    return {
        "name": INIT_CONTAINER,
        "image": settings.agent_image,
        "imagePullPolicy": settings.pull_policy,
        "command": ["python3", "-m", "kubepresence.agent.net.redirecting", *redirects],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
        },
    }


def build_patch(pod: Mapping[str, Any], settings: InjectionSettings) -> list[dict[str, Any]]:
    """The JSON patch (RFC 6902) that adds the agent to `pod`."""
    index, app = _app_container(pod)
    plan = plan_ports(pod)
    takeovers = plan.takeovers
    ops: list[dict[str, Any]] = []
    renames = plan.renames
    for port_index, port in enumerate(app.get("ports") or []):
        if port.get("name") in renames and port.get("protocol", "TCP") == "TCP":
            ops.append(
                {
                    "op": "replace",
                    "path": _pointer("spec", "containers", index, "ports", port_index, "name"),
                    "value": renames[port["name"]],
                }
            )
    ops += _handler_patches(app, index, renames, plan.probe_ports)
    ops.append(
        {
            "op": "add",
            "path": _pointer("spec", "containers", "-"),
            "value": agent_container(pod, plan, settings),
        }
    )
    ops += _pull_secret_patches(pod, settings)
    if any(t.redirected for t in takeovers):
        init = init_container(plan, settings)
        if pod["spec"].get("initContainers"):
            ops.append({"op": "add", "path": _pointer("spec", "initContainers", 0), "value": init})
        else:
            ops.append({"op": "add", "path": _pointer("spec", "initContainers"), "value": [init]})
    summary = ",".join(
        f"{t.name or t.app_port}={t.agent_port}>{t.app_port}{'(redirect)' if t.redirected else ''}"
        for t in takeovers
    )
    summary += "".join(f",probes={probe}>{port}" for port, probe in plan.probe_ports.items())
    ops.append(
        {
            "op": "add",
            "path": _pointer("metadata", "annotations", INJECTED_ANNOTATION),
            "value": summary or "no ports",
        }
    )
    return ops


def _pull_secret_patches(
    pod: Mapping[str, Any], settings: InjectionSettings
) -> list[dict[str, Any]]:
    """The agent's pull secrets the pod does not name yet (the pod's own stay first)."""
    present = pod["spec"].get("imagePullSecrets") or []
    have = {ref.get("name") for ref in present if isinstance(ref, Mapping)}
    wanted = [{"name": s} for s in dict.fromkeys(settings.image_pull_secrets) if s not in have]
    if not wanted:
        return []
    if present:
        path = _pointer("spec", "imagePullSecrets", "-")
        return [{"op": "add", "path": path, "value": ref} for ref in wanted]
    return [{"op": "add", "path": _pointer("spec", "imagePullSecrets"), "value": wanted}]


def decode_patch(response: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The patch inside an AdmissionReview response (tests and logs)."""
    encoded = response.get("response", {}).get("patch")
    if encoded is None:
        return None
    try:
        patch = json.loads(base64.b64decode(encoded))
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"not a base64 JSON patch: {error}") from error
    return list(patch)


RESOURCE_GROUPS = ("limits", "requests")


def parse_agent_resources(text: str) -> dict[str, dict[str, str]]:
    """`--agent-resources` (JSON, as the chart's toJson writes it) → the container's
    `resources`; ValueError with one line when it is not requests/limits of strings."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--agent-resources is not JSON: {error}") from None
    if not isinstance(value, dict) or not set(value) <= set(RESOURCE_GROUPS):
        raise ValueError("--agent-resources: an object with 'requests' and/or 'limits'")
    resources: dict[str, dict[str, str]] = {}
    for group, quantities in value.items():
        if not isinstance(quantities, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int) for k, v in quantities.items()
        ):
            raise ValueError(f"--agent-resources: {group} maps resource names to quantities")
        resources[group] = {k: str(v) for k, v in quantities.items()}
    return resources
