"""Deriving the cluster's network facts from what the manager sees."""

from __future__ import annotations

import pytest

from kubepresence.manager.core.clusterinfo import (
    collapse,
    parse_resolv_conf,
    service_range_from_error,
)

KUBELET_RESOLV_CONF = """\
search shop.svc.cluster.local svc.cluster.local cluster.local
nameserver 10.96.0.10
options ndots:5
"""


def test_resolver_of_a_pod() -> None:
    conf = parse_resolv_conf(KUBELET_RESOLV_CONF)
    assert conf.nameservers == ["10.96.0.10"]
    assert conf.cluster_domain == "cluster.local"


def test_custom_cluster_domain_and_comments() -> None:
    conf = parse_resolv_conf("# made by kubelet\nsearch a.svc.k8s.corp svc.k8s.corp k8s.corp.\n")
    assert conf.cluster_domain == "k8s.corp"


def test_resolver_without_cluster_search_list() -> None:
    with pytest.raises(ValueError, match="no svc"):
        _ = parse_resolv_conf("nameserver 1.2.3.4\n").cluster_domain


def test_collapse_merges_and_orders() -> None:
    assert collapse(["10.244.1.0/24", "fd00::/64", "10.244.0.0/24"]) == [
        "10.244.0.0/23",
        "fd00::/64",
    ]


def test_service_range_from_the_api_servers_refusal() -> None:
    message = (
        'Service "probe" is invalid: spec.clusterIPs: Invalid value: []string{"1.1.1.1"}: '
        "failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range."
        " The range of valid IPs is 10.96.0.0/16"
    )
    assert service_range_from_error(message) == ["10.96.0.0/16"]
    assert service_range_from_error("nothing here") == []
