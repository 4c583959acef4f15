"""What the manager learns from the objects it watches (see core.watchcache).

- Pods: only pods that carry the traffic agent matter (the webhook names the container
  `kubepresence-agent`; an init container of that name counts too). When such a pod is
  deleted, or its deletionTimestamp is set (it is terminating: its agent is on its way
  out, and the Service no longer sends it traffic), its agent is gone at once rather
  than when its session expires. A terminating pod's agent may not arrive again.
- Nodes: the pod subnets are the nodes' podCIDRs, merged; when nodes come, go or change
  their ranges, clients that ask afterwards get the new list. No node with a podCIDR
  (yet) changes nothing: an empty list would route nothing.
- Workloads (Deployments, StatefulSets, ReplicaSets): a deleted one takes its intercepts
  to ERROR with the reason "workload deleted".

Decisions on plain JSON dicts, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubepresence.manager.core.clusterinfo import collapse
from kubepresence.manager.core.watchcache import Change, ChangeType, Object
from kubepresence.protocol.workloads import AGENT_CONTAINER


def _names(containers: Any) -> set[str]:
    if not isinstance(containers, list):
        return set()
    return {str(c.get("name")) for c in containers if isinstance(c, Mapping)}


def is_agent_pod(pod: Object) -> bool:
    """The pod carries the traffic agent (as the webhook injects it)."""
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return False
    return AGENT_CONTAINER in _names(spec.get("containers")) | _names(spec.get("initContainers"))


def is_terminating(obj: Object) -> bool:
    meta = obj.get("metadata")
    return isinstance(meta, Mapping) and bool(meta.get("deletionTimestamp"))


class PodFate(enum.Enum):
    ENDING = "terminating"  # deletionTimestamp set: the agent is gone, may not return
    GONE = "deleted"  # the pod object is gone: its name is free again


@dataclass(frozen=True)
class PodEnd:
    namespace: str
    name: str
    fate: PodFate


def pod_ends(changes: Iterable[Change]) -> list[PodEnd]:
    """The agent pods among `changes` that are terminating or deleted."""
    ends = []
    for change in changes:
        namespace, name = change.key
        if change.type is ChangeType.DELETED:
            ends.append(PodEnd(namespace, name, PodFate.GONE))
        elif (
            change.new is not None
            and is_terminating(change.new)
            and (change.old is None or not is_terminating(change.old))
        ):
            ends.append(PodEnd(namespace, name, PodFate.ENDING))
    return ends


def node_pod_subnets(nodes: Iterable[Object]) -> list[str]:
    """The merged podCIDRs of `nodes` (spec.podCIDRs, else spec.podCIDR)."""
    cidrs: list[str] = []
    for node in nodes:
        spec = node.get("spec")
        if not isinstance(spec, Mapping):
            continue
        listed = spec.get("podCIDRs") or [spec.get("podCIDR")]
        cidrs.extend(str(c) for c in listed if c)
    return collapse(cidrs)


def deleted_workloads(changes: Iterable[Change]) -> list[tuple[str, str]]:
    """(namespace, name) of the workloads that `changes` delete."""
    return [c.key for c in changes if c.type is ChangeType.DELETED]
