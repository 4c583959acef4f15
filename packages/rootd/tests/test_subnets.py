"""Which subnets the VIF routes, and which local routes conflict."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.rootd.core.subnets import (
    Network,
    conflicts,
    parse_cidrs,
    routed_subnets,
)


def nets(*texts: str) -> list[Network]:
    return [ipaddress.ip_network(t) for t in texts]


def test_cluster_subnets_pass_through_collapsed() -> None:
    got = routed_subnets(nets("10.244.0.0/24", "10.244.1.0/24", "10.96.0.0/16"), [], [])
    assert got == nets("10.96.0.0/16", "10.244.0.0/23")


def test_never_proxy_carves_a_hole() -> None:
    got = routed_subnets(nets("10.96.0.0/16"), [], nets("10.96.0.0/17"))
    assert got == nets("10.96.128.0/17")


def test_never_proxy_swallowing_a_subnet_removes_it() -> None:
    assert routed_subnets(nets("10.96.0.0/16"), [], nets("10.0.0.0/8")) == []


def test_also_proxy_adds_and_mixed_families_stay_apart() -> None:
    got = routed_subnets(nets("10.96.0.0/16"), nets("fd00:10::/64"), nets("fd00::/8"))
    assert got == nets("10.96.0.0/16")


def test_bad_cidr_names_the_option() -> None:
    with pytest.raises(ValueError, match="--never-proxy: 'ten' is not a CIDR"):
        parse_cidrs(["ten"], "--never-proxy")


def test_conflict_with_a_local_route_is_reported() -> None:
    found = conflicts(
        nets("10.96.0.0/16"),
        [
            (ipaddress.ip_network("10.96.5.0/24"), "eth1"),
            (ipaddress.ip_network("0.0.0.0/0"), "eth0"),
        ],
    )
    assert len(found) == 1
    assert "10.96.0.0/16 overlaps the local route 10.96.5.0/24 via eth1" in str(found[0])


cidrs = st.builds(
    lambda addr, prefix: ipaddress.IPv4Network((addr, prefix), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(8, 30),
)


@given(st.lists(cidrs, max_size=4), st.lists(cidrs, max_size=3), st.lists(cidrs, max_size=3))
def test_routed_set_is_exactly_wanted_minus_excluded(
    cluster: list[Network], also: list[Network], never: list[Network]
) -> None:
    routed = routed_subnets(cluster, also, never)
    # Never overlapping an exclusion, never overlapping each other.
    for net in routed:
        assert not any(net.overlaps(ex) for ex in never)
    for i, a in enumerate(routed):
        assert not any(a.overlaps(b) for b in routed[i + 1 :])
    # Every wanted address outside the exclusions is still routed (checked on edges).
    for net in [*cluster, *also]:
        for addr in (net.network_address, net.broadcast_address):
            excluded = any(addr in ex for ex in never)
            assert excluded != any(addr in r for r in routed)
