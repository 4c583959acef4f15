"""Configuration files for containerd, CNI, kubelet, kube-proxy and crictl (notes §6).

The non-default settings each answer a trap of this machine: no CAP_SYS_RESOURCE
(restrict_oom_score_adj, oomScoreAdj 0), cgroup v1 (failCgroupV1 false, cgroupfs), no host
resolver for pods (resolvConf ""), imported images are not pinned (image GC off), and every
path points into the cluster's own directories so teardown knows exactly what to remove.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from . import layout


def containerd_toml(pause_image: str) -> str:
    return f"""\
version = 2
root = "{layout.CONTAINERD_ROOT}"
state = "{layout.CONTAINERD_STATE}"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]
[grpc]
  address = "{layout.CONTAINERD_SOCK}"
[ttrpc]
  address = "{layout.CONTAINERD_SOCK}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  stream_server_address = "127.0.0.1"
  # No CAP_SYS_RESOURCE on this VM: the default -998 for sandboxes makes runc fail.
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        # runc keeps container state under /run/containerd/runc by default; keep it ours.
        Root = "{layout.STATE}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{layout.CNI_CONF_DIR}"
    max_conf_num = 1
"""


def cni_conflist() -> str:
    doc = {
        "cniVersion": "1.0.0",
        "name": "pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.POD_BRIDGE,
                "isGateway": True,
                # No default route in pods and no masquerade: pod traffic cannot head for eth0.
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.IPAM),
                    "ranges": [[{"subnet": layout.NODE_POD_CIDR, "gateway": layout.POD_GATEWAY}]],
                    "routes": [{"dst": layout.POD_CIDR}, {"dst": layout.SERVICE_CIDR}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(doc, indent=2)


def kubelet_yaml() -> str:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.CONTAINERD_SOCK}",
        "address": layout.NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.PKI / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "rotateCertificates": False,
        "tlsCertFile": str(layout.PKI / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(layout.PKI / "kubelet-serving.key"),
        "clusterDNS": [layout.DNS_SERVICE_IP],
        "clusterDomain": "cluster.local",
        # Pods never inherit the host resolver (it is off the machine).
        "resolvConf": "",
        # Imported images are not pinned: image GC must never run.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "protectKernelDefaults": False,
        "serializeImagePulls": False,
        "podPidsLimit": 4096,
        "maxPods": 60,
        "podLogsDir": str(layout.POD_LOGS),
        "staticPodPath": "",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def kube_proxy_yaml() -> str:
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "hostnameOverride": layout.NODE_NAME,
        "clientConnection": {"kubeconfig": str(layout.CONFIG / "kube-proxy.conf")},
        "mode": "iptables",  # no CONFIG_IP_VS on this kernel
        "clusterCIDR": layout.POD_CIDR,
        "nodePortAddresses": [f"{layout.NODE_IP}/32"],
        "iptables": {"localhostNodePorts": False},
        "oomScoreAdj": 0,
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def crictl_yaml() -> str:
    return yaml.safe_dump(
        {
            "runtime-endpoint": f"unix://{layout.CONTAINERD_SOCK}",
            "image-endpoint": f"unix://{layout.CONTAINERD_SOCK}",
            "timeout": 30,
        }
    )


def write_all(pause_image: str) -> None:
    files: dict[Path, str] = {
        layout.CONTAINERD_CONFIG: containerd_toml(pause_image),
        layout.CNI_CONF_DIR / "10-pods.conflist": cni_conflist(),
        layout.CONFIG / "kubelet.yaml": kubelet_yaml(),
        layout.CONFIG / "kube-proxy.yaml": kube_proxy_yaml(),
        layout.CONFIG / "crictl.yaml": crictl_yaml(),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
