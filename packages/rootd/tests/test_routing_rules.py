"""Sans-IO routing rules of issue 20: conflicts and their ways out, allowed takeovers,
virtual addresses (`core.vnat`), and the DNS controls (suffixes, mappings, translation)."""

from __future__ import annotations

import ipaddress
from typing import Any

import dnslib
import pytest

from kubepresence.protocol.routing import ProxyVia, RoutingOptions
from kubepresence.rootd.core.dns import DnsPolicy, cluster_reply, mapped_reply, parse_query
from kubepresence.rootd.core.network import (
    NetworkRequest,
    PlanError,
    plan,
    plan_conflict,
    virtual_subnet_conflict,
)
from kubepresence.rootd.core.vnat import Translated, VirtualNetwork

net = ipaddress.ip_network
ip = ipaddress.ip_address


def request(**routing: Any) -> NetworkRequest:
    return NetworkRequest(
        session_id="s",
        pod_subnets=["10.244.0.0/16"],
        service_subnets=["10.96.0.0/16"],
        cluster_domain="cluster.local",
        dns_service_ip="10.96.0.10",
        search_namespaces=["default"],
        connector_socket="/run/userd.socket",
        manager_socket="/run/userd-manager.socket",
        routing=RoutingOptions(**routing),
    )


LOCAL_24 = [(net("10.96.0.0/24"), "lan0")]


# -- conflicts -----------------------------------------------------------------------


def test_a_conflict_names_the_subnet_the_route_its_device_and_every_way_out() -> None:
    line = plan_conflict(plan(request()), LOCAL_24)
    assert line is not None
    assert "\n" not in line
    for part in (
        "cluster subnet 10.96.0.0/16",
        "local route 10.96.0.0/24 via lan0",
        "--never-proxy 10.96.0.0/24",
        "--allow-conflicting-subnets 10.96.0.0/24",
        "--vnat 10.96.0.0/16",
        "--proxy-via 10.96.0.0/16=WORKLOAD",
    ):
        assert part in line


def test_a_wider_local_route_suggests_the_cluster_subnet_itself() -> None:
    line = plan_conflict(plan(request()), [(net("10.0.0.0/8"), "vpn0")])
    assert line is not None
    assert "--allow-conflicting-subnets 10.96.0.0/16" in line  # the overlap is the /16


def test_allowed_overlap_moves_the_subnet_to_the_policy_table() -> None:
    result = plan(request(allow_conflicting=("10.96.0.0/24",)))
    assert result.policy_routes == (net("10.96.0.0/16"),)
    assert net("10.96.0.0/16") not in result.routes
    assert net("10.244.0.0/16") in result.routes
    assert result.all_routes == (*result.routes, *result.policy_routes)
    assert plan_conflict(result, LOCAL_24) is None


def test_an_allowed_range_does_not_excuse_another_conflict() -> None:
    result = plan(request(allow_conflicting=("10.96.0.0/24",)))
    local = [*LOCAL_24, (net("10.96.9.0/24"), "lab0")]
    line = plan_conflict(result, local)
    assert line is not None
    assert "10.96.9.0/24 via lab0" in line


def test_an_allowed_range_outside_every_routed_subnet_is_refused() -> None:
    with pytest.raises(PlanError, match=r"--allow-conflicting-subnets 172\.16\.0\.0/12 is in no"):
        plan(request(allow_conflicting=("172.16.0.0/12",)))


# -- virtual addresses ---------------------------------------------------------------


def test_vnat_routes_the_virtual_subnet_instead_of_the_range() -> None:
    result = plan(request(vnat=("10.96.0.0/16",)))
    assert net("10.96.0.0/16") not in result.routes
    assert result.virtual_subnet == net("198.18.0.0/15")
    assert net("198.18.0.0/15") in result.routes
    # The DNS service is in the translated range: the workstation asks a virtual address.
    assert result.dns_address == ip("198.18.0.1")
    assert result.cluster_dns_address == ip("10.96.0.10")
    assert plan_conflict(result, LOCAL_24) is None


def test_proxy_via_translates_and_names_the_workload() -> None:
    result = plan(request(proxy_via=(ProxyVia("10.244.0.0/16", "shop", "cart"),)))
    assert result.translated == (Translated(net("10.244.0.0/16"), "shop/cart"),)
    assert net("10.96.0.0/16") in result.routes
    assert result.dns_address == ip("10.96.0.10")


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"vnat": ("10.96.0.0/16",), "virtual_subnet": "10.244.5.0/24"}, "overlaps the routed"),
        ({"vnat": ("10.96.0.0/16",), "virtual_subnet": "10.96.5.0/24"}, "overlaps the translated"),
        ({"vnat": ("10.96.0.0/16",), "virtual_subnet": "fd00::/64"}, "not the same IP version"),
        ({"vnat": ("10.96.0.0/16",), "virtual_subnet": "198.18.0.0/31"}, "too small"),
        ({"vnat": ("10.96.0.0/33",)}, "--vnat: '10.96.0.0/33' is not a CIDR"),
        ({"proxy_via": (ProxyVia("x", "a", "b"),)}, "--proxy-via: 'x' is not a CIDR"),
        ({"virtual_subnet": "nope"}, "--virtual-subnet: 'nope' is not a CIDR"),
    ],
)
def test_bad_virtual_settings_are_one_line(routing: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan(request(**routing))


def test_a_virtual_subnet_that_collides_with_a_local_route_is_named() -> None:
    result = plan(request(vnat=("10.96.0.0/16",)))
    line = virtual_subnet_conflict(result, [(net("198.18.4.0/24"), "bench0")])
    assert line is not None
    assert "--virtual-subnet" in line
    assert "bench0" in line
    assert virtual_subnet_conflict(plan(request()), [(net("198.18.4.0/24"), "x")]) is None


def test_virtual_addresses_are_stable_and_map_back() -> None:
    virtual = VirtualNetwork(
        net("198.18.0.0/30"),
        [Translated(net("10.96.0.0/16")), Translated(net("10.96.7.0/24"), "shop/cart")],
    )
    first = virtual.virtual_for(ip("10.96.1.1"))
    assert first == ip("198.18.0.2")
    assert virtual.virtual_for(ip("10.96.1.1")) == first  # the same each time
    assert virtual.virtual_for(ip("172.16.0.1")) is None  # not translated
    assert virtual.virtual_for(ip("10.96.7.9")) is None  # a /30 has one address left: used
    destination = virtual.destination_of(first)
    assert destination is not None
    assert destination.address == ip("10.96.1.1")
    assert destination.via == ""
    assert virtual.destination_of(ip("198.18.0.3")) is None


def test_the_most_specific_range_decides_the_workload() -> None:
    virtual = VirtualNetwork(
        net("198.18.0.0/24"),
        [Translated(net("10.96.0.0/16")), Translated(net("10.96.7.0/24"), "shop/cart")],
    )
    address = virtual.virtual_for(ip("10.96.7.9"))
    assert address is not None
    destination = virtual.destination_of(address)
    assert destination is not None
    assert destination.via == "shop/cart"
    virtual.bind_dns(ip("10.96.0.10"))
    assert virtual.virtual_for(ip("10.96.0.10")) == ip("198.18.0.1")
    assert [str(v) for v, _ in virtual.mappings()] == ["198.18.0.1", str(address)]


def test_a_virtual_subnet_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        VirtualNetwork(net("198.18.0.0/31"), [])


# -- DNS controls --------------------------------------------------------------------


def query(name: str, qtype: str = "A") -> Any:
    return parse_query(bytes(dnslib.DNSRecord.question(name, qtype).pack()))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("echo.default.", "echo.default.svc.cluster.local."),  # the built-in rule
        ("db.corp.internal.", "db.corp.internal."),  # include suffix: as asked
        ("x.public.corp.internal.", None),  # a longer exclude wins
        ("echo.default.svc.cluster.local.", "echo.default.svc.cluster.local."),
        ("legacy.svc.cluster.local.", None),  # excluded under the cluster domain
        ("example.com.", None),
        ("internal.", "internal."),  # the suffix itself
    ],
)
def test_the_longest_user_suffix_decides(name: str, expected: str | None) -> None:
    policy = DnsPolicy(
        "cluster.local",
        ["default"],
        include_suffixes=["internal", "public.corp.internal.x"],
        exclude_suffixes=[".public.corp.internal", "legacy.svc.cluster.local"],
    )
    assert policy.cluster_name(query(name)) == expected


def test_include_wins_a_tie() -> None:
    policy = DnsPolicy("cluster.local", include_suffixes=["corp"], exclude_suffixes=["corp"])
    assert policy.cluster_name(query("a.corp.")) == "a.corp."


def test_mapped_names_are_answered_with_their_address() -> None:
    policy = DnsPolicy("cluster.local", mappings={"DB.Local.": "10.96.3.3", "api": "echo.default"})
    assert policy.mapped(query("db.local.")) == "10.96.3.3"
    assert policy.mapped(query("api.")) == "echo.default"
    assert policy.mapped(query("other.")) is None
    reply = dnslib.DNSRecord.parse(mapped_reply(query("db.local."), "10.96.3.3", udp=True) or b"")
    assert [str(rr.rdata) for rr in reply.rr] == ["10.96.3.3"]
    empty = mapped_reply(query("db.local.", "AAAA"), "10.96.3.3", udp=True)
    assert empty is not None
    assert dnslib.DNSRecord.parse(empty).rr == []
    assert mapped_reply(query("api."), "echo.default", udp=True) is None  # a name: look it up


def test_cluster_answers_carry_virtual_addresses() -> None:
    virtual = VirtualNetwork(net("198.18.0.0/24"), [Translated(net("10.96.0.0/16"))])
    buffer = dnslib.DNSBuffer()
    dnslib.RR("echo.default.svc.cluster.local.", rdata=dnslib.A("10.96.4.4"), ttl=5).pack(buffer)
    other = dnslib.DNSBuffer()
    dnslib.RR("echo.default.svc.cluster.local.", rdata=dnslib.A("10.244.0.9"), ttl=5).pack(other)
    answers = [bytes(buffer.data), bytes(other.data)]
    reply = dnslib.DNSRecord.parse(
        cluster_reply(
            query("echo.default.svc.cluster.local."),
            0,
            answers,
            udp=True,
            translate=virtual.virtual_for,
        )
    )
    assert [str(rr.rdata) for rr in reply.rr] == ["198.18.0.2", "10.244.0.9"]
