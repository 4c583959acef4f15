"""connect's routing and DNS flags: lists, CIDR=WORKLOAD, NAME=TARGET, one-line refusals."""

from __future__ import annotations

from typing import Any

import pytest

from kubepresence.cli.core.routingflags import RoutingFlagError, parse_routing
from kubepresence.protocol.routing import ProxyVia, RoutingOptions


def test_lists_and_repeats_are_one_list() -> None:
    options = parse_routing(
        allow_conflicting=["10.96.0.0/24,10.96.1.0/24", "10.96.2.0/24"],
        vnat=["10.244.0.0/16"],
        proxy_via=["10.0.0.0/8=cart", "172.16.0.0/12=shop/db.primary"],
        virtual_subnet="100.100.0.0/16",
        dns_exclude_suffixes=[".com,org"],
        dns_include_suffixes=["Corp.Internal."],
        dns_map=["api.local=10.96.0.7", "Db.Local.=postgres.data"],
    )
    assert options == RoutingOptions(
        allow_conflicting=("10.96.0.0/24", "10.96.1.0/24", "10.96.2.0/24"),
        vnat=("10.244.0.0/16",),
        proxy_via=(
            ProxyVia("10.0.0.0/8", "", "cart"),
            ProxyVia("172.16.0.0/12", "shop", "db.primary"),
        ),
        virtual_subnet="100.100.0.0/16",
        dns_exclude_suffixes=("com", "org"),
        dns_include_suffixes=("corp.internal",),
        dns_mappings=(("api.local", "10.96.0.7"), ("db.local", "postgres.data")),
    )
    assert options.translated
    assert options.in_namespace("dev").proxy_via[0] == ProxyVia("10.0.0.0/8", "dev", "cart")
    assert options.in_namespace("dev").proxy_via[1].namespace == "shop"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"allow_conflicting": ["10.96.0.0/33"]}, "--allow-conflicting-subnets '10.96.0.0/33'"),
        ({"vnat": ["ten"]}, "--vnat 'ten' is not a CIDR"),
        ({"proxy_via": ["10.0.0.0/8"]}, "is not CIDR=WORKLOAD"),
        ({"proxy_via": ["10.0.0.0/8="]}, "is not CIDR=WORKLOAD"),
        ({"proxy_via": ["nope=cart"]}, "--proxy-via 'nope' is not a CIDR"),
        ({"proxy_via": ["10.0.0.0/8=Cart"]}, "'Cart' is not a workload name"),
        ({"proxy_via": ["10.0.0.0/8=/cart"]}, "the namespace before '/' is empty"),
        ({"proxy_via": ["10.0.0.0/8=Shop/cart"]}, "--proxy-via namespace 'Shop'"),
        ({"virtual_subnet": "x"}, "--virtual-subnet 'x' is not a CIDR"),
        ({"dns_exclude_suffixes": ["bad_suffix!"]}, "--dns-exclude-suffix 'bad_suffix!'"),
        ({"dns_include_suffixes": ["."]}, "--dns-include-suffix '.' is not a DNS name suffix"),
        ({"dns_map": ["api.local"]}, "--dns-map 'api.local' is not NAME=TARGET"),
        ({"dns_map": ["api.local=not a name"]}, "neither an IP address nor a host name"),
    ],
)
def test_bad_values_are_one_line(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(RoutingFlagError) as caught:
        parse_routing(**flags)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
