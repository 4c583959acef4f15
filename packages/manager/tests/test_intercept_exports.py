"""The intercept desk tells the client where the agent exports the app's volumes."""

from __future__ import annotations

from kubepresence.manager.rpc.interceptdesk import InterceptDesk
from kubepresence.protocol.gen import common

SPEC = common.InterceptSpec(
    name="echo", namespace="shop", workload_name="echo", service_port="http", local_port=8080
)


def desk() -> InterceptDesk:
    return InterceptDesk()


def test_the_export_of_an_accepting_agent_reaches_the_intercept() -> None:
    d = desk()
    created = d.create("client-1", SPEC)
    assert (created.pod_ip, created.sftp_port) == ("", 0)  # no agent has accepted yet
    d.agents_changed("shop", "echo", {"echo-b", "echo-a"})
    d.review(created.id, "echo-b", True, "", {}, export=("10.244.0.8", 8022))
    info = d.info(d.registry.get(created.id))
    assert (info.pod_ip, info.sftp_port) == ("10.244.0.8", 8022)
    # Two agents: the first by pod name, stable across snapshots.
    d.review(created.id, "echo-a", True, "", {}, export=("10.244.0.7", 8023))
    info = d.info(d.registry.get(created.id))
    assert (info.pod_ip, info.sftp_port) == ("10.244.0.7", 8023)
    # Its pod goes: the other agent's export takes over.
    d.agents_changed("shop", "echo", {"echo-b"})
    info = d.info(d.registry.get(created.id))
    assert (info.pod_ip, info.sftp_port) == ("10.244.0.8", 8022)


def test_an_agent_without_volumes_exports_nothing() -> None:
    d = desk()
    created = d.create("client-1", SPEC)
    d.agents_changed("shop", "echo", {"echo-a"})
    d.review(created.id, "echo-a", True, "", {}, export=None)
    info = d.info(d.registry.get(created.id))
    assert info.state == common.InterceptState.ACTIVE
    assert (info.pod_ip, info.sftp_port) == ("", 0)
