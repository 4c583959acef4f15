"""The manager's watches wired to what they tell, against a small fake API server.

- cluster-wide: one watch per kind over all namespaces; a terminating agent pod and a
  deleted one are told (a pod without the agent is not), the nodes' podCIDRs are told
  merged, a deleted Deployment is told;
- namespaced: one watch per kind and listed namespace, nodes still cluster-wide;
- nodes forbidden (403): the node watch gives up with one warning that the start-up
  discovery stays, and the other watches go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from kptest.waiting import eventually
from kubernetes_asyncio import client

from kubepresence.manager.k8s.observing import observe, watches

LISTS = {
    "/api/v1/pods",
    "/api/v1/nodes",
    "/apis/apps/v1/deployments",
    "/apis/apps/v1/statefulsets",
    "/apis/apps/v1/replicasets",
}


def pod(name: str, *, agent: bool = True, terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "resourceVersion": "5"}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-26T16:00:00Z"
    containers = [{"name": "app"}] + ([{"name": "kubepresence-agent"}] if agent else [])
    return {"metadata": meta, "spec": {"containers": containers}}


class Fake:
    """Lists from `lists` (path → items, or an HTTP status), then one scripted stream of
    events per path, then silence."""

    def __init__(
        self, lists: dict[str, list[dict[str, Any]] | int], events: dict[str, list[Any]]
    ) -> None:
        self.lists = lists
        self.events = events
        self.requests: list[tuple[str, str | None]] = []
        self.released = asyncio.Event()  # the test is over: silent streams end

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append((path, request.query.get("watch")))
        listed = self.lists.get(path, [])
        if isinstance(listed, int):
            return web.json_response({"kind": "Status", "code": listed}, status=listed)
        if not request.query.get("watch"):
            return web.json_response({"metadata": {"resourceVersion": "10"}, "items": listed})
        response = web.StreamResponse()
        await response.prepare(request)
        for event in self.events.pop(path, []):
            await response.write(json.dumps(event).encode() + b"\n")
        await self.released.wait()  # silence until the test is over
        return response


class Told:
    def __init__(self) -> None:
        self.pods: list[tuple[str, str, bool]] = []
        self.subnets: list[list[str]] = []
        self.workloads: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def pod_ended(self, namespace: str, pod: str, *, deleted: bool) -> None:
        self.pods.append((namespace, pod, deleted))
        self.changed.set()

    def pod_subnets_changed(self, subnets: list[str]) -> None:
        self.subnets.append(subnets)
        self.changed.set()

    def workload_deleted(self, namespace: str, name: str) -> None:
        self.workloads.append((namespace, name))
        self.changed.set()

    async def until(self, done: Any) -> None:
        async with asyncio.timeout(5):
            while not done():
                await self.changed.wait()
                self.changed.clear()


@pytest.fixture
async def api_of() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []
    apis: list[client.ApiClient] = []
    fakes: list[Fake] = []

    async def start(fake: Fake) -> client.ApiClient:
        fakes.append(fake)
        app = web.Application()
        app.router.add_get("/{tail:.*}", fake.handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        api = client.ApiClient(
            client.Configuration(host=f"http://127.0.0.1:{runner.addresses[0][1]}")
        )
        apis.append(api)
        return api

    yield start
    for fake in fakes:
        fake.released.set()
    for api in apis:
        await api.close()
    for runner in runners:
        await runner.cleanup()


async def test_cluster_wide_watches_tell_pods_nodes_and_workloads(api_of: Any) -> None:
    fake = Fake(
        lists={
            "/api/v1/pods": [pod("going", terminating=True), pod("plain", agent=False), pod("up")],
            "/api/v1/nodes": [
                {"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.1.0/24"]}},
                {"metadata": {"name": "n2"}, "spec": {"podCIDR": "10.244.0.0/24"}},
            ],
            "/apis/apps/v1/deployments": [{"metadata": {"name": "echo", "namespace": "shop"}}],
        },
        events={
            "/api/v1/pods": [
                {"type": "DELETED", "object": pod("plain", agent=False)},
                {"type": "DELETED", "object": pod("up")},
            ],
            "/apis/apps/v1/deployments": [
                {"type": "DELETED", "object": {"metadata": {"name": "echo", "namespace": "shop"}}}
            ],
        },
    )
    told = Told()
    task = asyncio.create_task(observe(await api_of(fake), told, []))
    try:
        await told.until(lambda: len(told.pods) == 2 and told.workloads and told.subnets)
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert told.pods == [("shop", "going", False), ("shop", "up", True)]
    assert told.subnets == [["10.244.0.0/23"]]
    assert told.workloads == [("shop", "echo")]
    assert {path for path, _ in fake.requests} == LISTS


async def test_namespaced_watches_look_only_in_their_namespaces(api_of: Any) -> None:
    api = await api_of(Fake({}, {}))
    names = sorted(w.what for w in watches(api, Told(), ["kp", "apps"]))
    assert names == sorted(
        f"{kind} in {ns}"
        for kind in ("agent pods", "deployments", "statefulsets", "replicasets")
        for ns in ("kp", "apps")
    )
    everywhere = sorted(w.what for w in watches(api, Told(), []))
    assert everywhere == sorted(
        f"{kind} in all namespaces"
        for kind in ("agent pods", "deployments", "statefulsets", "replicasets")
    )


async def test_forbidden_nodes_keep_the_start_up_discovery(
    api_of: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake = Fake(
        lists={"/api/v1/nodes": 403, "/api/v1/pods": [pod("going", terminating=True)]},
        events={},
    )
    told = Told()
    caplog.set_level(logging.INFO, logger="kubepresence.manager.k8s")
    task = asyncio.create_task(observe(await api_of(fake), told, []))
    try:
        await told.until(lambda: told.pods)
        # The nodes watch gave up (it says so as it ends): no retry can follow.
        await eventually(
            lambda: any("stay as discovered" in r.getMessage() for r in caplog.records),
            "the nodes watch ended",
        )
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [p for p, _ in fake.requests].count("/api/v1/nodes") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "cannot list nodes: forbidden" in warnings[0]
    assert warnings[0].endswith("the pod subnets stay as discovered at start")
    assert told.subnets == []
