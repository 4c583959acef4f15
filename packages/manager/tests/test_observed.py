"""What the manager reads from watched pods, nodes and workloads; intercepts of a deleted
workload; the agent table's pod lookup."""

from __future__ import annotations

from typing import Any

import pytest

from kubepresence.manager.core.agents import AgentTable
from kubepresence.manager.core.intercepts import (
    WORKLOAD_DELETED,
    InterceptRegistry,
    InterceptState,
    Target,
)
from kubepresence.manager.core.observed import (
    PodEnd,
    PodFate,
    deleted_workloads,
    is_agent_pod,
    node_pod_subnets,
    pod_ends,
)
from kubepresence.manager.core.watchcache import Change, ChangeType, WatchCache
from kubepresence.protocol.agents import Agent


def pod(
    name: str,
    rv: str = "1",
    *,
    containers: tuple[str, ...] = ("app", "kubepresence-agent"),
    inits: tuple[str, ...] = (),
    terminating: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "resourceVersion": rv}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-26T16:00:00Z"
    spec: dict[str, Any] = {"containers": [{"name": c} for c in containers]}
    if inits:
        spec["initContainers"] = [{"name": c} for c in inits]
    return {"metadata": meta, "spec": spec}


def test_agent_pods_are_those_with_the_agent_container() -> None:
    assert is_agent_pod(pod("a"))
    assert is_agent_pod(pod("a", containers=("app",), inits=("kubepresence-agent",)))
    assert not is_agent_pod(pod("a", containers=("app",)))
    assert not is_agent_pod(pod("a", containers=("app",), inits=("kubepresence-init",)))
    assert not is_agent_pod({"metadata": {"name": "a"}})
    assert not is_agent_pod({"metadata": {"name": "a"}, "spec": {"containers": "x"}})


def test_pod_ends_through_a_watch_cache() -> None:
    cache = WatchCache(is_agent_pod)
    listing = {
        "metadata": {"resourceVersion": "10"},
        "items": [pod("running"), pod("going", terminating=True), pod("plain", containers=("x",))],
    }
    # A pod already terminating when the manager starts counts too.
    assert pod_ends(cache.listed(listing)) == [PodEnd("shop", "going", PodFate.ENDING)]
    # The deletionTimestamp appears: ending, once (later updates do not repeat it).
    set_ts = cache.event({"type": "MODIFIED", "object": pod("running", "11", terminating=True)})
    assert pod_ends(set_ts) == [PodEnd("shop", "running", PodFate.ENDING)]
    again = cache.event({"type": "MODIFIED", "object": pod("running", "12", terminating=True)})
    assert pod_ends(again) == []
    gone = cache.event({"type": "DELETED", "object": pod("running", "13", terminating=True)})
    assert pod_ends(gone) == [PodEnd("shop", "running", PodFate.GONE)]
    # A pod without the agent never shows.
    plain = cache.event({"type": "DELETED", "object": pod("plain", "14", containers=("x",))})
    assert pod_ends(plain) == []
    # A relist that misses a pod reports it gone.
    relist = cache.listed({"metadata": {"resourceVersion": "20"}, "items": []})
    assert pod_ends(relist) == [PodEnd("shop", "going", PodFate.GONE)]


def test_ordinary_updates_end_nothing() -> None:
    added = Change(ChangeType.ADDED, ("shop", "a"), None, pod("a"))
    modified = Change(ChangeType.MODIFIED, ("shop", "a"), pod("a"), pod("a", "2"))
    assert pod_ends([added, modified]) == []


def node(name: str, *cidrs: str, single: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if cidrs:
        spec["podCIDRs"] = list(cidrs)
    if single:
        spec["podCIDR"] = single
    return {"metadata": {"name": name}, "spec": spec}


def test_node_pod_subnets_are_merged() -> None:
    nodes = [
        node("a", "10.244.1.0/24", "fd00:1::/64"),
        node("b", "10.244.0.0/24"),
        node("c", single="10.244.2.0/24"),  # only the old singular field
        node("d"),  # no range yet
        {"metadata": {"name": "e"}},
    ]
    assert node_pod_subnets(nodes) == ["10.244.0.0/23", "10.244.2.0/24", "fd00:1::/64"]
    assert node_pod_subnets([]) == []
    with pytest.raises(ValueError, match="does not appear to be"):
        node_pod_subnets([node("x", "not-a-cidr")])


def test_deleted_workloads() -> None:
    deployment = {"metadata": {"name": "echo", "namespace": "shop"}}
    changes = [
        Change(ChangeType.ADDED, ("shop", "new"), None, deployment),
        Change(ChangeType.DELETED, ("shop", "echo"), deployment, None),
    ]
    assert deleted_workloads(changes) == [("shop", "echo")]


def test_a_deleted_workload_takes_its_intercepts_to_error() -> None:
    registry = InterceptRegistry()
    mine = registry.create("c1", "echo", Target("shop", "echo", "http"), ("127.0.0.1", 8080))
    other = registry.create("c1", "web", Target("shop", "web", "http"), ("127.0.0.1", 8081))
    registry.agents_changed("shop", "echo", {"echo-1"})
    registry.review(mine.id, "echo-1", accepted=True)
    assert mine.state is InterceptState.ACTIVE
    assert registry.workload_deleted("shop", "echo") == [mine]
    assert (mine.state, mine.message) == (InterceptState.ERROR, WORKLOAD_DELETED)
    assert other.state is InterceptState.WAITING
    # Told again (a relist): nothing new. Its pods going afterwards does not hide why.
    assert registry.workload_deleted("shop", "echo") == []
    registry.agents_changed("shop", "echo", set())
    assert (mine.state, mine.message) == (InterceptState.ERROR, WORKLOAD_DELETED)
    assert registry.workload_deleted("other", "echo") == []


def test_the_agent_table_finds_a_pods_session() -> None:
    table = AgentTable()
    table.arrive("s1", Agent(pod_name="echo-1", namespace="shop"))
    assert table.session_of("shop", "echo-1") == "s1"
    assert table.session_of("other", "echo-1") is None
    table.arrive("s2", Agent(pod_name="echo-1", namespace="shop"))
    assert table.session_of("shop", "echo-1") == "s2"
    table.depart(["s2"])
    assert table.session_of("shop", "echo-1") is None
