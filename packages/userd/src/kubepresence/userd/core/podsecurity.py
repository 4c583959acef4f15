"""Pod Security Admission: may this intercept's takeover run in the target namespace?

Theory of operation. The API server's PodSecurity admission enforces one of the Pod
Security Standards on every pod a namespace creates, chosen by the namespace's label
`pod-security.kubernetes.io/enforce` (`privileged`, `baseline` or `restricted`; no label:
the cluster's default, `privileged` unless the API server was configured otherwise). The
`warn` and `audit` labels never refuse a pod, and the `enforce-version` label cannot change
the answers below (the rules they rest on are the same in every version).

An intercept takes a container port over in one of two ways (DESIGN §5):

| takeover                        | the new pods carry               | priv. | baseline | restr. |
|---------------------------------|----------------------------------|-------|----------|--------|
| RENAME: a Service targets the   | the agent sidecar only: no added | yes   | yes      | yes    |
|   port by name                  |   capability, non-root, seccomp  |       |          |        |
| REDIRECT: targeted by number    | also an init container that adds | yes   | refused  | refused|
|   (or no Service selects it)    |   NET_ADMIN, NET_RAW (iptables)  |       |          |        |

`baseline` allows only a fixed list of added capabilities (AUDIT_WRITE, CHOWN,
DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP,
SETUID, SYS_CHROOT), and `restricted` none but NET_BIND_SERVICE: both reject the init
container's pods. An enforce label with a value PodSecurity does not know counts as
`restricted`, as PodSecurity itself reads it.

`decide` answers before anything is applied: a refusal is one line that names the port,
the namespace, its level and what the user can do instead. When userd may not read the
namespace (or the cluster sets a default level the labels do not show), the refusal comes
from the API server instead, as the ReplicaSet's failure to create pods:
`rejected_by_pod_security` recognises it, and the shell rolls the intercept back.

Pure: no I/O. The shell (`k8s/podsecurity.py`) reads the namespace.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
# What the API server writes into a pod creation it refuses (and the ReplicaSet copies
# into its ReplicaFailure condition): `pods "x" is forbidden: violates PodSecurity "…"`.
REJECTION_MARK = "violates PodSecurity"


class Level(enum.Enum):
    """A Pod Security Standard, least strict first."""

    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


class TakeoverMethod(enum.Enum):
    """How the agent takes the intercepted port over."""

    RENAME = "rename"  # targeted by name: the agent takes the name (a sidecar only)
    REDIRECT = "redirect"  # targeted by number: an init container with NET_ADMIN redirects it


# The levels whose pods may not add NET_ADMIN / NET_RAW.
_FORBID_REDIRECT = frozenset({Level.BASELINE, Level.RESTRICTED})


def enforced_level(labels: Mapping[str, str]) -> Level:
    """The level PodSecurity enforces on a namespace with these labels (no enforce label:
    privileged, the API server's default; a value it does not know: restricted)."""
    value = labels.get(ENFORCE_LABEL)
    if value is None:
        return Level.PRIVILEGED
    try:
        return Level(value)
    except ValueError:
        return Level.RESTRICTED


@dataclass(frozen=True)
class Decision:
    """May the takeover's pods pass admission? `reason` is the user's one line when not."""

    allowed: bool
    level: Level
    reason: str = ""


def decide(
    namespace: str,
    labels: Mapping[str, str],
    takeover: TakeoverMethod,
    port: str,
    workload: str,
    service: str = "",
) -> Decision:
    """Decide for an intercept of `port` (a container port) of `workload` ("deployment/x")
    in `namespace`, whose labels are `labels`; `service` is the Service that targets the
    port ("" when none selects the workload)."""
    level = enforced_level(labels)
    if takeover is TakeoverMethod.RENAME or level not in _FORBID_REDIRECT:
        return Decision(True, level)
    value = labels.get(ENFORCE_LABEL, "")
    shown = f'"{level.value}"' + ("" if value == level.value else f" (label value {value!r})")
    if service:
        why = f"service {service} targets it by number"
        instead = (
            f"name the container port and make service {service} target it by name "
            "(a named port needs no init container)"
        )
    else:
        why = "no service selects the workload, so callers dial the port by number"
        instead = "intercept through a service that targets the port by name"
    return Decision(
        False,
        level,
        f"cannot intercept port {port} of {workload}: {why}, which only an init container "
        f"with NET_ADMIN can redirect, and namespace {namespace} enforces Pod Security "
        f"{shown}, which forbids it; {instead}, or intercept in a namespace that allows it",
    )


def rejected_by_pod_security(message: str) -> bool:
    """Is this pod-creation failure (a ReplicaSet's or Deployment's ReplicaFailure
    condition message) PodSecurity's refusal?"""
    return REJECTION_MARK in message
