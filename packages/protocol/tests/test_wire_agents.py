"""An agent on the wire: every field of AgentInfo both ways, unknown values as defaults."""

from __future__ import annotations

from kubepresence.protocol import wire
from kubepresence.protocol.agents import Agent, PortTakeover
from kubepresence.protocol.gen import common
from kubepresence.protocol.workloads import KINDS

FULL = Agent(
    pod_name="echo-abc",
    namespace="shop",
    pod_ip="10.244.0.5",
    workload_name="echo",
    workload_kind="StatefulSet",
    container="app",
    ports=(
        PortTakeover("http", 8080, 9900),
        PortTakeover("", 9000, 9901, redirected=True),
        PortTakeover("dns", 53, 9902, protocol="UDP"),
    ),
    environment={"GREETING": "hello"},
    version="1.2.3",
    sftp_port=8022,
    direct_port=9903,
)


def test_every_field_round_trips() -> None:
    assert wire.agent_from_message(wire.agent_to_message(FULL)) == FULL
    defaults = Agent(pod_name="", namespace="")
    assert all(getattr(FULL, name) != value for name, value in vars(defaults).items())


def test_the_message() -> None:
    message = wire.agent_to_message(FULL)
    assert message.workload_kind == common.WorkloadKind.STATEFULSET
    assert [(p.name, p.port, p.agent_port, p.redirected, p.protocol) for p in message.ports] == [
        ("http", 8080, 9900, False, common.Protocol.TCP),
        ("", 9000, 9901, True, common.Protocol.TCP),
        ("dns", 53, 9902, False, common.Protocol.UDP),
    ]
    # The bytes parse back to the same message (what the manager receives).
    assert common.AgentInfo.parse(bytes(message)) == message


def test_every_workload_kind_has_a_wire_value() -> None:
    for kind in KINDS:
        message = wire.agent_to_message(Agent("p", "ns", workload_kind=kind.kind))
        assert message.workload_kind != common.WorkloadKind.UNSPECIFIED
        assert wire.agent_from_message(message).workload_kind == kind.kind


def test_unknown_values_read_as_defaults() -> None:
    bare = wire.agent_to_message(Agent("p", "ns", workload_kind="Job"))
    assert bare.workload_kind == common.WorkloadKind.UNSPECIFIED
    assert wire.agent_from_message(bare).workload_kind == ""
    info = common.AgentInfo(pod_name="p", namespace="ns", ports=[common.ContainerPort(port=1)])
    assert wire.agent_from_message(info).ports == (PortTakeover("", 1, 0),)
