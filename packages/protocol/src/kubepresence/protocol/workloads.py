"""The workloads kubepresence intercepts: their kinds, how the Kubernetes API names them,
and the annotations kubepresence reads and writes on their pod templates and pods.

The manager annotates a workload's pod template for injection, the user daemon removes the
annotation, lists workloads and follows their pods; both look a name up as each kind in
turn, in the order of `KINDS`. Each kind's API group, version, plural (RBAC, watches) and
the name the generated Kubernetes client gives its calls (`read_namespaced_<call_name>`)
are written once, here.

The annotations and the injected container's name are a contract between the parts too
(the manager injects on one, the user daemon removes agents by clearing it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkloadKind:
    kind: str  # as in a manifest and an ownerReference: "Deployment"
    plural: str  # as in a URL and an RBAC rule: "deployments"
    call_name: str  # in the generated client's calls: "deployment", "stateful_set"
    group: str = "apps"
    version: str = "v1"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def call(self, verb: str, *, everywhere: bool = False) -> str:
        """The generated client's method for `verb` ("read", "patch", "list"…) of this
        kind in one namespace, or (`everywhere`) for all namespaces."""
        if everywhere:
            return f"{verb}_{self.call_name}_for_all_namespaces"
        return f"{verb}_namespaced_{self.call_name}"


DEPLOYMENT = WorkloadKind("Deployment", "deployments", "deployment")
STATEFULSET = WorkloadKind("StatefulSet", "statefulsets", "stateful_set")
REPLICASET = WorkloadKind("ReplicaSet", "replicasets", "replica_set")

# The order a name is looked up in (a Deployment's ReplicaSets carry names of their own).
KINDS = (DEPLOYMENT, STATEFULSET, REPLICASET)
KIND_NAMES = "Deployment, StatefulSet or ReplicaSet"  # for messages: "no <KIND_NAMES> named x"


def by_kind(kind: str) -> WorkloadKind | None:
    """The kind named `kind` ("Deployment"), None for one kubepresence does not intercept."""
    return next((k for k in KINDS if k.kind == kind), None)


# On a pod template: the webhook injects the traffic agent into its pods.
INJECT_TRAFFIC_AGENT = "kubepresence.io/inject-traffic-agent"
INJECT_ENABLED = "enabled"
# On a pod template: the namespace of the traffic manager whose webhook injects its pods
# (their agents join that manager). Absent: every manager's webhook may inject. Several
# managers in one cluster would otherwise race for the same pods.
INJECT_MANAGER_NAMESPACE = "kubepresence.io/manager-namespace"
# On a pod template: the container the agent serves (default: the first one).
INJECT_CONTAINER = "kubepresence.io/inject-container"
# On a pod template: comma-separated port numbers that Services target by number; the
# webhook redirects them to the agent (an init container with iptables).
INJECT_NUMERIC_PORTS = "kubepresence.io/inject-numeric-ports"
# The injected container's name: how every part recognises a pod that has the agent.
AGENT_CONTAINER = "kubepresence-agent"
