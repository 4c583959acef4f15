"""core.resolvconf: reading the original resolv.conf and rendering rootd's."""

from __future__ import annotations

from kubepresence.rootd.core.resolvconf import (
    DEFAULT_NAMESERVER,
    cluster_search,
    parse,
    render,
    upstreams,
    valid_namespace,
)

ORIGINAL = """\
# managed by the lab
; another comment
nameserver 192.0.2.53
nameserver 2001:db8::53   # trailing comment words are ignored
domain old.example
search corp.example lab.example.
options ndots:2 edns0
options timeout:1
"""


def test_parse_reads_nameservers_last_search_and_options() -> None:
    settings = parse(ORIGINAL)
    assert settings.nameservers == ("192.0.2.53", "2001:db8::53")
    assert settings.search == ("corp.example", "lab.example")  # the last search/domain wins
    assert settings.options == ("ndots:2", "edns0", "timeout:1")


def test_domain_after_search_wins() -> None:
    assert parse("search a.example\ndomain b.example\n").search == ("b.example",)


def test_render_points_at_the_cluster_dns_with_namespaces_first() -> None:
    text = render(parse(ORIGINAL), "10.96.0.10", ["shop", "demo", "shop"], "cluster.local")
    lines = text.decode().splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == [
        "nameserver 10.96.0.10",
        "search shop.svc.cluster.local demo.svc.cluster.local svc.cluster.local cluster.local "
        "corp.example lab.example",
        "options ndots:5 edns0 timeout:1",
    ]
    assert text.endswith(b"\n")


def test_render_without_original_search_or_options() -> None:
    text = render(parse("nameserver 127.0.0.1\n"), "10.96.0.10", [], "cluster.local.")
    assert text.decode().splitlines()[1:] == [
        "nameserver 10.96.0.10",
        "search svc.cluster.local cluster.local",
        "options ndots:5",
    ]


def test_cluster_search_dedupes_and_ends_with_the_domain() -> None:
    assert cluster_search(["a", "b", "a"], "Cluster.Local") == [
        "a.svc.cluster.local",
        "b.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ]


def test_upstreams_are_the_original_nameservers_never_ourselves() -> None:
    assert upstreams(parse(ORIGINAL), "10.96.0.10") == ["192.0.2.53", "2001:db8::53"]
    assert upstreams(parse("nameserver 10.96.0.10\n"), "10.96.0.10") == []
    assert upstreams(parse("search x\n"), "10.96.0.10") == [DEFAULT_NAMESERVER]


def test_namespace_names() -> None:
    assert valid_namespace("kube-system")
    assert not valid_namespace("Kube")
    assert not valid_namespace("-x")
    assert not valid_namespace("a.b")
    assert not valid_namespace("")
