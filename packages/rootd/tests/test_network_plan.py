"""core.network: a Connect's request checked and turned into routes; route conflicts."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from kubepresence.rootd.core.network import (
    NetworkRequest,
    PlanError,
    local_routes,
    plan,
    plan_conflict,
)


def request(**changes: Any) -> NetworkRequest:
    base: dict[str, Any] = {
        "session_id": "client-1",
        "pod_subnets": ["10.244.0.0/24"],
        "service_subnets": ["10.96.0.0/16"],
        "cluster_domain": "cluster.local",
        "dns_service_ip": "10.96.0.10",
        "search_namespaces": ["demo", "shop"],
        "connector_socket": "/run/user/1000/kubepresence/userd.socket",
        "manager_socket": "/run/user/1000/kubepresence/userd-manager.socket",
    }
    base.update(changes)
    return NetworkRequest(**base)


def nets(*texts: str) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


def test_plan_routes_the_cluster_subnets_and_covers_dns() -> None:
    result = plan(request())
    assert result.routed == nets("10.96.0.0/16", "10.244.0.0/24")
    assert result.routes == result.routed  # DNS is inside the service subnet
    assert str(result.dns_address) == "10.96.0.10"
    assert result.cluster_domain == "cluster.local"
    assert result.search_namespaces == ("demo", "shop")


def test_also_and_never_proxy_and_a_dns_route_when_excluded() -> None:
    result = plan(request(also_proxy=["172.20.0.0/16"], never_proxy=["10.96.0.0/24"]))
    assert ipaddress.ip_network("172.20.0.0/16") in result.routed
    assert all(not n.overlaps(ipaddress.ip_network("10.96.0.0/24")) for n in result.routed)
    # The DNS address fell into the excluded range: the workstation asks the virtual
    # subnet's first address instead, with a host route of its own.
    assert str(result.dns_address) == "198.18.0.1"
    assert str(result.cluster_dns_address) == "10.96.0.10"
    assert ipaddress.ip_network("198.18.0.1/32") in result.routes
    assert ipaddress.ip_network("10.96.0.10/32") not in result.routes


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"also_proxy": ["10.0.0.0/33"]}, "--also-proxy: '10.0.0.0/33' is not a CIDR"),
        ({"never_proxy": ["nope"]}, "--never-proxy: 'nope' is not a CIDR"),
        ({"dns_service_ip": "ten"}, "'ten' is not an IP address"),
        ({"cluster_domain": ""}, "is not a DNS name"),
        ({"cluster_domain": "bad_domain"}, "is not a DNS name"),
        ({"search_namespaces": ["ok", "Not-OK"]}, "'Not-OK' is not a namespace name"),
        ({"connector_socket": ""}, "no connector socket"),
        ({"manager_socket": ""}, "no manager socket"),
        ({"never_proxy": ["0.0.0.0/0"]}, "nothing to route"),
    ],
)
def test_bad_requests_are_one_line(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError) as raised:
        plan(request(**changes))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


IP_ROUTES = [
    {"dst": "default", "gateway": "10.77.0.1", "dev": "eth0"},
    {"dst": "10.77.0.0/24", "dev": "eth0", "protocol": "kernel"},
    {"type": "local", "dst": "10.77.0.2", "dev": "eth0", "table": "local"},
    {"type": "broadcast", "dst": "10.77.0.255", "dev": "eth0", "table": "local"},
    {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local"},
    {"dst": "10.96.0.0/16", "dev": "kp0"},  # our own, left by a crash: not a conflict
    {"type": "unreachable", "dst": "192.168.50.0/24"},
    {"dst": "fe80::/64", "dev": "eth0"},
]


def test_local_routes_skip_defaults_broadcasts_and_our_device() -> None:
    routes = local_routes(IP_ROUTES, own_device="kp0")
    assert [(str(n), d) for n, d in routes] == [
        ("10.77.0.0/24", "eth0"),
        ("10.77.0.2/32", "eth0 (table local)"),
        ("127.0.0.0/8", "lo (table local)"),
        ("192.168.50.0/24", "unreachable"),
        ("fe80::/64", "eth0"),
    ]


def test_no_conflict_for_the_lab_cluster() -> None:
    routes = local_routes(IP_ROUTES, own_device="kp0")
    assert plan_conflict(plan(request()), routes) is None


def test_a_conflict_names_subnet_route_and_device_in_one_line() -> None:
    routes = local_routes(IP_ROUTES, own_device="kp0")
    line = plan_conflict(plan(request(also_proxy=["10.77.0.0/16"])), routes)
    assert line is not None
    assert "10.77.0.0/16" in line
    assert "10.77.0.0/24" in line
    assert "eth0" in line
    assert "(and 1 more conflict)" in line  # the local address 10.77.0.2 as well
    assert "\n" not in line
