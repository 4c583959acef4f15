"""Where the cluster keeps its files and which addresses it uses.

One place for every path and address, so bring-up, teardown and the tests agree. The
addressing plan and directory names are those of notes/local-cluster.md §5.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CLUSTER_DIR = REPO / "tests" / "cluster"
IMAGES_SRC = REPO / "deploy" / "images"

CONFIG = Path("/etc/kubepresence-cluster")
PKI = CONFIG / "pki"
STATE = Path("/run/kubepresence-cluster")
LOGS = Path("/var/log/kubepresence-cluster")
DATA = Path("/var/lib/kubepresence-cluster")
CACHE = Path(os.environ.get("KUBEPRESENCE_CLUSTER_CACHE", "/var/cache/kubepresence-cluster"))

BIN = CACHE / "bin"
K8S_BIN = BIN / "kubernetes"
IMAGE_CACHE = CACHE / "img"

PIDS = STATE / "pids"
IPAM = STATE / "ipam"
CONTAINERD_STATE = STATE / "containerd"
CONTAINERD_ROOT = DATA / "containerd"
CONTAINERD_SOCK = CONTAINERD_STATE / "containerd.sock"
CONTAINERD_CONFIG = CONFIG / "containerd.toml"
CNI_CONF_DIR = CONFIG / "cni"
ETCD_DATA = DATA / "etcd"
KUBELET_ROOT = DATA / "kubelet"
POD_LOGS = LOGS / "pods"
# Snapshot of what the machine looked like before the first `up`; `down` restores it.
BEFORE = DATA / "before.json"

ADMIN_KUBECONFIG = CONFIG / "admin.conf"
WORKSTATION_KUBECONFIG = CONFIG / "workstation.conf"

NODE_NAME = "kubepresence-cluster"
LAN_BRIDGE = "k8slan0"
LAN_CIDR = "10.77.0.0/24"
NODE_IP = "10.77.0.1"
SERVICE_SINK = "ksvc0"
POD_BRIDGE = "cni0"
POD_CIDR = "10.244.0.0/16"
NODE_POD_CIDR = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/16"
API_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
API_PORT = 6443
API_URL = f"https://{NODE_IP}:{API_PORT}"
HOST_UPLINK = "eth0"

# `ip netns` keeps its namespaces here, and containerd (through the CNI) the pods'.
NETNS_DIR = Path("/run/netns")
WORKSTATION_NETNS = "ws1"
WORKSTATION_IP = "10.77.0.2"
WORKSTATION_HOST_VETH = "ws1-h"
WORKSTATION_NETNS_ETC = Path("/etc/netns") / WORKSTATION_NETNS

GUARD_TABLE = "k8s_guard"
GUARD_FAMILY = "inet"

K8S_VERSION_FILE = CLUSTER_DIR / "go" / "kubernetes" / "go.mod"


def binary(component: str, name: str | None = None) -> Path:
    """Path of a binary built by build-binaries.sh, e.g. binary("kubernetes", "kubelet")."""
    return BIN / component / (name or component)


def kubectl() -> Path:
    return K8S_BIN / "kubectl"
