"""Kubernetes objects the cluster and the tests create: CoreDNS and the echo workloads.

Plain dicts, serialised by the caller. Every pod names an explicit local image tag with
imagePullPolicy Never: nothing here may ever pull from a registry.
"""

from __future__ import annotations

from typing import Any

from . import layout

Manifest = dict[str, Any]

COREFILE = """\
.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    cache 30
    loadbalance
    reload
}
"""
# No `forward` plugin on purpose: upstream's `forward . /etc/resolv.conf` would send every
# non-cluster query to the host's resolver, off the machine (notes R5).


def coredns(image: str) -> list[Manifest]:
    labels = {"k8s-app": "kube-dns"}
    ns = "kube-system"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": ns},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": ns},
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                                ],
                                "volumeMounts": [
                                    {
                                        "name": "config",
                                        "mountPath": "/etc/coredns",
                                        "readOnly": True,
                                    }
                                ],
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "initialDelaySeconds": 10,
                                    "periodSeconds": 10,
                                },
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": {
                                    "runAsUser": 65532,
                                    "runAsGroup": 65532,
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                },
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
            "spec": {
                "selector": labels,
                "clusterIP": layout.DNS_SERVICE_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ],
            },
        },
    ]


ECHO_KINDS = {
    # kind: (script, container port, protocol, service port)
    "http": ("http_echo.py", 8080, "TCP", 80),
    "tcp": ("tcp_echo.py", 9000, "TCP", 9000),
    "udp": ("udp_echo.py", 9001, "UDP", 9001),
}


def echo(
    kind: str,
    name: str,
    namespace: str,
    image: str,
    replicas: int = 1,
    *,
    pod_annotations: dict[str, str] | None = None,
    named_target_port: bool = False,
) -> list[Manifest]:
    """A Deployment and a Service for one of the echo servers of deploy/images/testapps.

    The Service targets the container port by number, or by its name (`kind`) with
    `named_target_port`; `pod_annotations` go on the pod template (e.g. agent injection).
    """
    script, port, protocol, service_port = ECHO_KINDS[kind]
    labels = {"app": name}
    container: Manifest = {
        "name": "echo",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python3", f"/opt/testapps/{script}", "--port", str(port)],
        "ports": [{"name": kind, "containerPort": port, "protocol": protocol}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }
    # UDP has no probe that proves the server is up; the process being started must do.
    if kind == "http":
        container["readinessProbe"] = {
            "httpGet": {"path": "/ready", "port": port},
            "periodSeconds": 1,
        }
    elif protocol == "TCP":
        container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        **({"annotations": pod_annotations} if pod_annotations else {}),
                    },
                    "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [
                    {
                        "name": kind,
                        "port": service_port,
                        "targetPort": kind if named_target_port else port,
                        "protocol": protocol,
                    }
                ],
            },
        },
    ]


def client_pod(name: str, namespace: str, image: str) -> Manifest:
    """A pod that only sleeps: a place to run commands from inside the cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            # `sleep` as PID 1 ignores SIGTERM; keep deletion quick.
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "infinity"],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                        "limits": {"memory": "128Mi"},
                    },
                }
            ],
        },
    }


def echo_workload(
    workload_kind: str,
    name: str,
    namespace: str,
    image: str,
    replicas: int = 1,
    *,
    named_target_port: bool = False,
    env: list[Manifest] | None = None,
    env_from: list[Manifest] | None = None,
) -> list[Manifest]:
    """The http echo server of `echo` as a Deployment, StatefulSet or bare ReplicaSet, with
    its Service; `env` and `env_from` are added to the app container."""
    objects = echo("http", name, namespace, image, replicas, named_target_port=named_target_port)
    workload = objects[0]
    container = workload["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [*container["env"], *(env or [])]
    if env_from:
        container["envFrom"] = list(env_from)
    workload["kind"] = workload_kind
    if workload_kind == "StatefulSet":
        workload["spec"]["serviceName"] = name
        workload["spec"]["podManagementPolicy"] = "Parallel"  # both pods at once
    elif workload_kind != "Deployment":
        assert workload_kind == "ReplicaSet", workload_kind
    return objects


def config_objects(
    name: str, namespace: str, data: dict[str, str], secret: dict[str, str]
) -> list[Manifest]:
    """A ConfigMap and a Secret named `name` (for environment tests)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": data,
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": secret,
        },
    ]
