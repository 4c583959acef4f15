"""The CLI's views (`core.views`) of the daemons' messages in protobuf's JSON mapping, as
the JSON calls carry them (made here with the same `message_dict`)."""

from __future__ import annotations

from kubepresence.cli.core import views
from kubepresence.protocol.gen import common, connector
from kubepresence.protocol.jsonserving import message_dict


def intercept(**spec: object) -> common.InterceptInfo:
    return common.InterceptInfo(
        spec=common.InterceptSpec(
            name="orders",
            namespace="shop",
            workload_name="orders",
            service_port="http",
            local_host="127.0.0.1",
            local_port=8080,
            **spec,  # type: ignore[arg-type]
        ),
        state=common.InterceptState.ACTIVE,
        environment={"GREETING": "hi"},
    )


def test_a_disconnected_daemon_shows_only_its_state() -> None:
    info = connector.ConnectInfo(state=connector.ConnectState.DISCONNECTED, context="lab")
    assert views.connection(message_dict(info)) == {"state": "disconnected"}


def test_a_connection_shows_everything_it_has() -> None:
    info = connector.ConnectInfo(
        state=connector.ConnectState.CONNECTED,
        context="lab",
        cluster_server="https://10.0.0.1:6443",
        namespace="shop",
        manager_namespace="kubepresence",
        session=common.SessionInfo(session_id="s-1", cluster_id="c-1"),
        cluster=common.ClusterInfo(
            pod_subnets=["10.244.0.0/16"],
            service_subnets=["10.96.0.0/12"],
            cluster_domain="cluster.local",
            dns_service_ip="10.96.0.10",
            manager_version="0.2.0",
        ),
        vif_name="kp0",
        open_flows=12345678901,
        resolver="resolv.conf",
        fragments=common.IpFragments(received=3, reassembled=1, dropped={"z": 2, "a": 1}),
        routing=common.RoutingOptions(
            vnat=["10.96.0.0/12"],
            proxy_via=[common.ProxyVia(cidr="10.1.0.0/16", namespace="shop", workload="db")],
            dns_mappings={"b.example": "1.2.3.4", "a.example": "web"},
        ),
        virtual_addresses=[
            common.VirtualAddress(virtual_ip="198.18.0.1", cluster_ip="10.96.0.5"),
            common.VirtualAddress(virtual_ip="198.18.0.2", cluster_ip="10.1.0.7", via="shop/db"),
        ],
        intercepts=[
            intercept(
                http_filter=common.HttpFilter(
                    headers=[common.HeaderMatch(name="X-Dev", value="alice")], method="get"
                )
            )
        ],
        inbound="straight from the agents (1 pod(s), port-forward to each)",
        events=["connected"],
    )
    assert views.connection(message_dict(info)) == {
        "state": "connected",
        "context": "lab",
        "server": "https://10.0.0.1:6443",
        "namespace": "shop",
        "manager_namespace": "kubepresence",
        "session": "s-1",
        "cluster": {
            "pod_subnets": ["10.244.0.0/16"],
            "service_subnets": ["10.96.0.0/12"],
            "cluster_domain": "cluster.local",
            "dns_service_ip": "10.96.0.10",
            "manager_version": "0.2.0",
        },
        "vif": "kp0",
        "open_flows": 12345678901,
        "resolver": "resolv.conf",
        "ip_fragments": {
            "received": 3,
            "reassembled": 1,
            "sent": 0,
            "dropped": {"a": 1, "z": 2},
        },
        "routing": {
            "allow_conflicting": [],
            "vnat": ["10.96.0.0/12"],
            "proxy_via": ["10.1.0.0/16=shop/db"],
            "virtual_subnet": "198.18.0.0/15",
            "virtual_addresses": [
                "198.18.0.1 -> 10.96.0.5",
                "198.18.0.2 -> 10.1.0.7 via shop/db",
            ],
        },
        "dns": {
            "exclude_suffixes": [],
            "include_suffixes": [],
            "mappings": {"a.example": "web", "b.example": "1.2.3.4"},
        },
        "intercepts": [
            "orders: shop/orders port http (x-dev: alice, method GET) -> 127.0.0.1:8080 (active)"
        ],
        "inbound": "straight from the agents (1 pod(s), port-forward to each)",
        "events": ["connected"],
    }


def test_a_connection_without_the_optional_parts() -> None:
    info = connector.ConnectInfo(state=connector.ConnectState.CONNECTED, context="lab")
    view = views.connection(message_dict(info))
    assert "session" not in view
    assert "cluster" not in view
    assert "network_problem" not in view
    assert view["routing"]["virtual_subnet"] == ""  # nothing translated
    assert view["ip_fragments"] == {"received": 0, "reassembled": 0, "sent": 0, "dropped": {}}


def test_an_intercept_result() -> None:
    info = intercept(service_name="orders-svc")
    info.mount_point = "/tmp/kp/orders"
    info.state = common.InterceptState.WAITING
    info.message = "injecting the agent"
    assert views.intercept_result(message_dict(info)) == views.InterceptResult(
        name="orders",
        namespace="shop",
        workload="orders",
        port="http",
        local="127.0.0.1:8080",
        state="waiting",
        message="injecting the agent",
        environment={"GREETING": "hi"},
        service="orders-svc",
        mount_point="/tmp/kp/orders",
    )


def test_an_empty_filter_is_a_global_intercept() -> None:
    info = intercept(http_filter=common.HttpFilter())
    assert views.intercept_result(message_dict(info)).http_filter == ""


def test_workloads() -> None:
    found = connector.WorkloadList(
        workloads=[
            connector.WorkloadInfo(
                name="orders",
                namespace="shop",
                kind=common.WorkloadKind.STATEFULSET,
                agent_installed=True,
                intercepts=[intercept()],
            )
        ]
    )
    [workload] = views.workloads(message_dict(found))
    assert {k: v for k, v in workload.items() if k != "intercepts"} == {
        "name": "orders",
        "namespace": "shop",
        "kind": "Statefulset",
        "agent_installed": True,
    }
    assert workload["intercepts"][0]["local"] == "127.0.0.1:8080"
    assert views.workloads(message_dict(connector.WorkloadList())) == []
