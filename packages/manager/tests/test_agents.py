"""The agent table: arrival, replacement by pod, departure, generations, snapshots."""

from __future__ import annotations

import pytest

from kubepresence.manager.core.agents import AgentTable
from kubepresence.protocol.agents import Agent, PortTakeover


def agent(pod: str, ns: str = "shop", ip: str = "10.244.0.9") -> Agent:
    return Agent(
        pod_name=pod,
        namespace=ns,
        pod_ip=ip,
        workload_name="echo",
        workload_kind="Deployment",
        container="echo",
        ports=(PortTakeover("http", 8080, 9900),),
        environment={"GREETING": "hello"},
    )


def test_arrive_and_depart_change_the_generation() -> None:
    table = AgentTable()
    assert (table.generation, table.snapshot()) == (0, [])
    assert table.arrive("s1", agent("b")) is None
    assert table.arrive("s2", agent("a")) is None
    assert table.generation == 2
    assert [a.pod_name for a in table.snapshot()] == ["a", "b"]
    assert table.depart(["s1", "unknown"]) == [agent("b")]
    assert table.generation == 3
    assert table.depart(["s1"]) == []
    assert table.generation == 3  # nothing changed: watchers are not woken
    assert len(table) == 1


def test_snapshot_is_sorted_by_namespace_then_pod() -> None:
    table = AgentTable()
    table.arrive("1", agent("z", ns="a"))
    table.arrive("2", agent("a", ns="b"))
    table.arrive("3", agent("m", ns="a"))
    assert [a.pod for a in table.snapshot()] == [("a", "m"), ("a", "z"), ("b", "a")]


def test_the_same_pod_arriving_again_replaces_its_earlier_agent() -> None:
    table = AgentTable()
    table.arrive("old", agent("p", ip="10.244.0.1"))
    assert table.arrive("new", agent("p", ip="10.244.0.2")) == "old"
    assert [a.pod_ip for a in table.snapshot()] == ["10.244.0.2"]
    assert table.get("old") is None
    # The earlier session ending later does not take the new agent with it.
    assert table.depart(["old"]) == []
    assert [a.pod_ip for a in table.snapshot()] == ["10.244.0.2"]
    assert table.depart(["new"]) == [agent("p", ip="10.244.0.2")]
    assert table.snapshot() == []


def test_same_pod_name_in_another_namespace_is_another_agent() -> None:
    table = AgentTable()
    table.arrive("1", agent("p", ns="a"))
    assert table.arrive("2", agent("p", ns="b")) is None
    assert len(table) == 2


def test_bad_arrivals_are_refused() -> None:
    table = AgentTable()
    with pytest.raises(ValueError, match="names its pod"):
        table.arrive("1", agent(""))
    table.arrive("1", agent("p"))
    with pytest.raises(ValueError, match="has an agent already"):
        table.arrive("1", agent("q"))


def test_sessions_of_a_workload_are_its_present_agents() -> None:
    table = AgentTable()
    table.arrive("s1", Agent("web-a", "shop", workload_name="web"))
    table.arrive("s2", Agent("web-b", "shop", workload_name="web"))
    table.arrive("s3", Agent("web-c", "other", workload_name="web"))
    table.arrive("s4", Agent("db-a", "shop", workload_name="db"))
    assert table.sessions_of_workload("shop", "web") == ["s1", "s2"]
    table.depart(["s1"])
    table.arrive("s5", Agent("web-b", "shop", workload_name="web"))  # web-b again
    assert table.sessions_of_workload("shop", "web") == ["s5"]
    assert table.sessions_of_workload("shop", "nothing") == []
