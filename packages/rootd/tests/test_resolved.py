"""core.resolved: when rootd uses systemd-resolved, and what it sets on the TUN link."""

from __future__ import annotations

import pytest

from kubepresence.rootd.core.resolved import (
    AF_INET,
    AF_INET6,
    ResolverMethod,
    choose_method,
    link_settings,
    shown_domains,
)

STUB = "# managed by systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"


@pytest.mark.parametrize(
    ("on_bus", "text", "method"),
    [
        (True, STUB, ResolverMethod.RESOLVED),
        (True, "nameserver 127.0.0.54\n", ResolverMethod.RESOLVED),
        # resolved runs, but resolv.conf sends lookups elsewhere: not the machine's resolver.
        (True, "nameserver 192.0.2.53\n", ResolverMethod.RESOLV_CONF),
        (True, "nameserver 127.0.0.53\nnameserver 192.0.2.53\n", ResolverMethod.RESOLV_CONF),
        (True, "", ResolverMethod.RESOLV_CONF),
        (False, STUB, ResolverMethod.RESOLV_CONF),
        (False, "nameserver 192.0.2.53\n", ResolverMethod.RESOLV_CONF),
    ],
)
def test_resolved_only_where_it_runs_and_resolv_conf_names_its_stub(
    on_bus: bool, text: str, method: ResolverMethod
) -> None:
    assert choose_method(on_bus, text) is method


def test_link_settings_route_the_cluster_and_namespaces_and_search_the_namespaces() -> None:
    settings = link_settings("198.18.0.10", ["demo", "shop", "demo"], "cluster.local.")
    assert settings.dns == ((AF_INET, bytes([198, 18, 0, 10])),)
    assert shown_domains(settings) == [
        "~cluster.local",
        "~demo",
        "~shop",
        "demo.svc.cluster.local",
        "shop.svc.cluster.local",
    ]
    assert settings.default_route is False


def test_a_namespace_named_like_a_top_level_domain_gets_no_routing_domain() -> None:
    settings = link_settings("fd00::a", ["com", "Demo", "not_a_label"], "Cluster.Local")
    assert settings.dns[0][0] == AF_INET6
    assert len(settings.dns[0][1]) == 16
    assert shown_domains(settings) == ["~cluster.local", "~demo", "demo.svc.cluster.local"]


def test_the_users_dns_controls_shape_the_routing_domains() -> None:
    from kubepresence.rootd.core.resolved import link_settings as settings_for

    wanted = settings_for(
        "10.96.0.10",
        ["demo", "shop"],
        "cluster.local",
        also_routed=["corp.internal", "api.example.", "demo"],
        excluded=["shop"],
    )
    routing = [name for name, is_routing in wanted.domains if is_routing]
    assert routing == ["cluster.local", "demo", "corp.internal", "api.example"]
    assert ("shop.svc.cluster.local", False) not in wanted.domains
