"""Resolving `--port LOCAL[:PORT]` through the Services that select a workload."""

from __future__ import annotations

import pytest

from kubepresence.protocol.errors import Category, KubepresenceError
from kubepresence.userd.core.interceptports import (
    ContainerPort,
    Resolved,
    Service,
    ServicePort,
    Workload,
    resolve,
    selecting,
)

ECHO = Workload(
    kind="Deployment",
    name="echo",
    labels={"app": "echo", "tier": "web"},
    container="echo",
    ports=(
        ContainerPort(8080, "http"),
        ContainerPort(9090, "metrics"),
        ContainerPort(5353, "dns", "UDP"),
        ContainerPort(7000),
    ),
)


def svc(name: str, *ports: ServicePort, selector: dict[str, str] | None = None) -> Service:
    return Service(name, {"app": "echo"} if selector is None else selector, ports)


def fails(workload: Workload, services: list[Service], port: str, service: str = "") -> str:
    with pytest.raises(KubepresenceError) as caught:
        resolve(workload, services, port, service)
    assert caught.value.category is Category.USER
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_selector_must_be_a_non_empty_subset_of_the_labels() -> None:
    services = [
        svc("a"),
        svc("b", selector={"app": "echo", "tier": "web"}),
        svc("c", selector={"app": "echo", "tier": "db"}),
        svc("d", selector={}),  # selects nothing (endpoints managed by hand)
        svc("e", selector={"app": "other"}),
    ]
    assert [s.name for s in selecting(services, ECHO.labels)] == ["a", "b"]


@pytest.mark.parametrize("port", ["http", "80"])
def test_named_target_port_by_service_port_name_or_number(port: str) -> None:
    services = [svc("echo", ServicePort(80, "http", "http"))]
    assert resolve(ECHO, services, port) == Resolved(
        port="http", numeric=False, service="echo", service_port="http/80"
    )


def test_service_port_name_differs_from_the_container_port_name() -> None:
    services = [svc("echo", ServicePort(80, "web", "http"))]
    assert resolve(ECHO, services, "web").port == "http"
    assert "no port 'http' (ports: web/80)" in fails(ECHO, services, "http")


def test_numeric_target_port_is_numeric_even_when_the_container_names_it() -> None:
    services = [svc("echo", ServicePort(80, "http", 8080))]
    assert resolve(ECHO, services, "http") == Resolved(
        port="8080", numeric=True, service="echo", service_port="http/80"
    )


def test_numeric_target_port_given_as_text() -> None:
    services = [svc("echo", ServicePort(80, "http", "8080"))]
    assert resolve(ECHO, services, "80") == Resolved("8080", True, "echo", "http/80")


def test_target_port_defaults_to_the_port() -> None:
    services = [svc("echo", ServicePort(7000))]
    assert resolve(ECHO, services, "7000") == Resolved("7000", True, "echo", "7000")


def test_undeclared_numeric_target_is_taken_as_the_bare_number() -> None:
    services = [svc("echo", ServicePort(80, "http", 6000))]
    assert resolve(ECHO, services, "http").port == "6000"


def test_without_port_a_single_port_service_is_used() -> None:
    services = [svc("echo", ServicePort(80, "http", "http"))]
    assert resolve(ECHO, services, "").port == "http"


def test_without_port_a_multi_port_service_asks_for_one() -> None:
    services = [svc("echo", ServicePort(80, "http", "http"), ServicePort(9090, "metrics", 9090))]
    message = fails(ECHO, services, "")
    assert message == (
        "service echo has 2 ports (http/80, metrics/9090): name one with --port LOCAL:PORT"
    )


def test_multi_port_service_picks_by_name_and_by_number() -> None:
    services = [svc("echo", ServicePort(80, "http", "http"), ServicePort(9090, "metrics", 9090))]
    assert resolve(ECHO, services, "metrics") == Resolved("9090", True, "echo", "metrics/9090")
    assert resolve(ECHO, services, "80").port == "http"
    assert resolve(ECHO, services, "9090").port == "9090"


def test_unknown_service_port_lists_the_ports() -> None:
    services = [svc("echo", ServicePort(80, "http", "http"), ServicePort(9090, "metrics", 9090))]
    assert fails(ECHO, services, "grpc") == (
        "service echo has no port 'grpc' (ports: http/80, metrics/9090)"
    )
    assert "has no port '8080'" in fails(ECHO, services, "8080")


def test_target_name_the_container_does_not_declare() -> None:
    services = [svc("echo", ServicePort(80, "http", "web"))]
    assert fails(ECHO, services, "http") == (
        "service echo port http/80 targets the container port 'web', which container echo "
        "does not declare (ports: http/8080, metrics/9090, 7000)"
    )


def test_udp_ports_are_refused() -> None:
    services = [svc("dns", ServicePort(53, "dns", "dns", "UDP"))]
    assert "is UDP: intercepts take TCP ports only" in fails(ECHO, services, "dns")
    services = [svc("dns", ServicePort(53, "dns", "dns"))]
    assert "container port dns of echo is UDP" in fails(ECHO, services, "dns")


def test_several_services_are_ambiguous_in_one_line() -> None:
    services = [
        svc("echo-b", ServicePort(80, "http", "http")),
        svc("echo-a", ServicePort(81, "http", 8080)),
    ]
    assert fails(ECHO, services, "http") == (
        "several services select the pods of deployment/echo: echo-a, echo-b; "
        "choose one with --service"
    )


def test_service_option_picks_one_of_several() -> None:
    services = [
        svc("echo-b", ServicePort(80, "http", "http")),
        svc("echo-a", ServicePort(81, "http", 8080)),
    ]
    assert resolve(ECHO, services, "http", "echo-a") == Resolved("8080", True, "echo-a", "http/81")
    assert resolve(ECHO, services, "http", "echo-b").port == "http"


def test_service_option_must_select_the_workload() -> None:
    services = [
        svc("echo", ServicePort(80, "http", "http")),
        svc("other", ServicePort(80, "http", "http"), selector={"app": "other"}),
    ]
    assert fails(ECHO, services, "http", "other") == (
        "service 'other' does not select the pods of deployment/echo (services that do: echo)"
    )
    assert "(services that do: none)" in fails(ECHO, [], "http", "nope")


@pytest.mark.parametrize(
    ("port", "expected"),
    [("http", "8080"), ("8080", "8080"), ("7000", "7000"), ("6000", "6000")],
)
def test_no_service_takes_the_container_port_by_number(port: str, expected: str) -> None:
    resolved = resolve(ECHO, [svc("other", ServicePort(80), selector={"app": "x"})], port)
    assert resolved.port == expected
    assert resolved.numeric
    assert resolved.service == ""
    assert resolved.note.startswith(
        "no service selects the pods of deployment/echo: intercepting the container port"
    )


def test_no_service_bad_container_port() -> None:
    assert fails(ECHO, [], "grpc") == (
        "no service selects the pods of deployment/echo and container echo has no TCP port "
        "'grpc' (ports: http/8080, metrics/9090, 7000)"
    )
    assert "is UDP" in fails(ECHO, [], "5353")
    assert "no TCP port 'dns'" in fails(ECHO, [], "dns")
    assert "out of range" in fails(ECHO, [], "70000")


def test_no_service_without_port_needs_a_single_tcp_port() -> None:
    single = Workload("StatefulSet", "db", {"app": "db"}, "db", (ContainerPort(5432, "pg"),))
    resolved = resolve(single, [], "")
    assert (resolved.port, resolved.numeric) == ("5432", True)
    assert "statefulset/db" in resolved.note
    assert "has 3 TCP ports" in fails(ECHO, [], "")
