"""Unit tests of manifests and component configs: the traps the notes list stay closed."""

from __future__ import annotations

import json
from typing import Any

import yaml
from kpcluster import configs, manifests, mounts, network


def _containers(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for obj in objs:
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec") or (spec if obj["kind"] == "Pod" else None)
        if pod:
            out += pod["containers"]
    return out


def test_every_container_uses_a_local_tagged_image_never_pulled() -> None:
    objs = [
        *manifests.coredns("localhost/coredns:v1"),
        manifests.client_pod("c", "ns", "localhost/t:1"),
    ]
    for kind in manifests.ECHO_KINDS:
        objs += manifests.echo(kind, kind, "ns", "localhost/t:1")
    containers = _containers(objs)
    assert len(containers) == 5
    for c in containers:
        assert c["imagePullPolicy"] == "Never"
        assert c["image"].startswith("localhost/")
        assert ":" in c["image"].split("/")[-1]


def test_corefile_has_no_forward() -> None:
    assert "forward" not in manifests.COREFILE
    assert "kubernetes cluster.local" in manifests.COREFILE


def test_kubelet_and_proxy_settings_for_this_machine() -> None:
    kubelet = yaml.safe_load(configs.kubelet_yaml())
    assert kubelet["failCgroupV1"] is False
    assert kubelet["resolvConf"] == ""
    assert kubelet["imageGCHighThresholdPercent"] == 100
    proxy = yaml.safe_load(configs.kube_proxy_yaml())
    assert proxy["oomScoreAdj"] == 0
    assert proxy["mode"] == "iptables"
    assert "restrict_oom_score_adj = true" in configs.containerd_toml("localhost/pause:1")


def test_pods_get_no_default_route_and_no_masquerade() -> None:
    bridge = json.loads(configs.cni_conflist())["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["isDefaultGateway"] is False
    dsts = [r["dst"] for r in bridge["ipam"]["routes"]]
    assert "0.0.0.0/0" not in dsts
    assert dsts == ["10.244.0.0/16", "10.96.0.0/16"]


def test_guard_rules_cover_the_lab_ranges() -> None:
    assert "10.244.0.0/16, 10.96.0.0/16, 10.77.0.0/24" in network.GUARD_RULES
    assert network.GUARD_RULES.count("counter drop") == 9


def test_mountinfo_unescape() -> None:
    assert mounts._unescape(r"/run/a\040b") == "/run/a b"
    assert mounts._unescape(r"/x\134y") == "/x\\y"


def test_ws_keeps_the_commands_own_double_dash() -> None:
    from kpcluster import cli

    argv = ["ws", "--", "kubectl", "exec", "pod", "--", "python3", "-c", "print(1)"]
    args = cli.parser().parse_args(argv)
    assert cli.ws_command(args.command) == [
        "kubectl",
        "exec",
        "pod",
        "--",
        "python3",
        "-c",
        "print(1)",
    ]
