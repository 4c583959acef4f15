"""The watch shell against a small fake API server (aiohttp on 127.0.0.1).

The fake answers the real client's requests (kubernetes-asyncio's generated
list_namespaced_pod) from a script, one step per request, and records each request's
query; the test checks what the shell asked for and what its handler was told:
list → watch from the list's version with bookmarks → the stream ends → watch again from
the last event's or bookmark's version → an ERROR 410 event → list again (a deletion missed
meanwhile comes out as DELETED) → HTTP 500 twice (one warning) → HTTP 410 → list → watch,
and a clean stop on cancellation while a stream is open.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from kubepresence.manager.core.watchcache import Change, WatchCache
from kubepresence.manager.k8s.watching import Watch
from kubepresence.protocol.backoff import Backoff

Step = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLOSED = web.AppKey("closed", asyncio.Event)
RELEASED = web.AppKey("released", asyncio.Event)  # the test is over: silent streams end


def pod(name: str, rv: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv},
    }


def listed(rv: str, *items: dict[str, Any]) -> Step:
    async def answer(request: web.Request) -> web.StreamResponse:
        assert request.query.get("watch") is None
        return web.json_response(
            {"kind": "PodList", "metadata": {"resourceVersion": rv}, "items": list(items)}
        )

    return answer


def streamed(*events: dict[str, Any], hold: bool = False, silent: bool = False) -> Step:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        for event in events:
            await response.write(json.dumps(event).encode() + b"\n")
        if silent:  # a dead stream: nothing more until the test is over
            await request.app[RELEASED].wait()
        if hold:  # blank keep-alive lines (the shell skips them) until the client goes
            try:
                while True:
                    await response.write(b"\n")
                    await asyncio.sleep(0.02)  # the fake server's keep-alive interval
            except ConnectionResetError:
                request.app[CLOSED].set()
        return response

    return answer


def status(code: int, message: str) -> Step:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"kind": "Status", "status": "Failure", "code": code, "message": message},
            status=code,
        )

    return answer


class FakeApiServer:
    def __init__(self, script: list[Step]) -> None:
        self.script = list(script)
        self.queries: list[dict[str, str]] = []
        self.done = asyncio.Event()  # the script's last step was taken
        self.closed = asyncio.Event()  # a held stream saw its client go

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.path == "/api/v1/namespaces/shop/pods"
        self.queries.append(dict(request.query))
        assert self.script, f"a request after the script's end: {request.query}"
        step = self.script.pop(0)
        if not self.script:
            self.done.set()
        return await step(request)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[FakeApiServer], Awaitable[client.ApiClient]]]:
    runners: list[web.AppRunner] = []
    apis: list[client.ApiClient] = []
    released = asyncio.Event()

    async def start(fake: FakeApiServer) -> client.ApiClient:
        app = web.Application()
        app[CLOSED] = fake.closed
        app[RELEASED] = released
        app.router.add_get("/api/v1/namespaces/shop/pods", fake.handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
        api = client.ApiClient(configuration)
        apis.append(api)
        return api

    yield start
    released.set()
    for api in apis:
        await api.close()
    for runner in runners:
        await runner.cleanup()


def bookmark(rv: str) -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": rv}}}


async def test_list_watch_rewatch_relist_backoff_and_cancel(
    serve: Callable[[FakeApiServer], Awaitable[client.ApiClient]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeApiServer(
        [
            listed("10", pod("a", "5")),
            streamed({"type": "ADDED", "object": pod("b", "11")}, bookmark("15")),
            streamed(
                {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
            ),
            listed("20", pod("b", "11")),  # a went while nobody watched
            status(500, "etcd is having a moment"),
            status(500, "etcd is having a moment"),
            status(410, "too old resource version: 20 (25)"),
            listed("30", pod("b", "11")),
            streamed({"type": "MODIFIED", "object": pod("b", "31")}, hold=True),
        ]
    )
    api = await serve(fake)
    told: list[tuple[str, str]] = []
    modified = asyncio.Event()

    def handle(changes: list[Change], cache: WatchCache) -> None:
        told.extend((c.type.value, c.key[1]) for c in changes)
        if ("MODIFIED", "b") in told:
            modified.set()

    watch = Watch(
        "pods in shop",
        client.CoreV1Api(api).list_namespaced_pod,
        handle,
        backoff=Backoff(first=0.01, limit=0.02),
        server_timeout=120,
        namespace="shop",
    )
    caplog.set_level(logging.INFO, logger="kubepresence.manager.k8s.watching")
    task = asyncio.create_task(watch.run())
    try:
        async with asyncio.timeout(10):
            await fake.done.wait()
            await modified.wait()
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        await fake.closed.wait()  # the held stream was closed, not leaked

    versions = [(q.get("watch"), q.get("resourceVersion")) for q in fake.queries]
    assert versions == [
        (None, None),  # list
        ("True", "10"),  # watch from the list's version
        ("True", "15"),  # the stream ended: on from the bookmark's version
        (None, None),  # ERROR 410: list again
        ("True", "20"),  # 500 …
        ("True", "20"),  # … and again, same version
        ("True", "20"),  # HTTP 410
        (None, None),  # list again
        ("True", "30"),
    ]
    watching = [q for q in fake.queries if q.get("watch")]
    assert all(q["allowWatchBookmarks"] == "True" for q in watching)
    assert all(q["timeoutSeconds"] == "120" for q in watching)
    assert told == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),  # the relist's difference
        ("MODIFIED", "b"),
    ]
    assert watch.cache.resource_version == "31"
    assert (watch.lists, watch.watches) == (3, 6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # the same reason twice: logged once
    assert "etcd is having a moment" in warnings[0]
    messages = [r.getMessage() for r in caplog.records]
    assert any("works again" in m for m in messages)
    assert sum("listing again" in m for m in messages) == 2


async def test_a_silent_stream_is_dropped_and_watched_again(
    serve: Callable[[FakeApiServer], Awaitable[client.ApiClient]],
) -> None:
    # The server promised to end the watch after 1 s; it stays silent instead.
    fake = FakeApiServer([listed("10"), streamed(silent=True), streamed(silent=True)])
    api = await serve(fake)
    watch = Watch(
        "pods in shop",
        client.CoreV1Api(api).list_namespaced_pod,
        lambda changes, cache: None,
        backoff=Backoff(first=0.01, limit=0.02),
        server_timeout=1,
        read_margin=0.2,
        namespace="shop",
    )
    task = asyncio.create_task(watch.run())
    try:
        async with asyncio.timeout(5):
            await fake.done.wait()
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(q.get("watch"), q.get("resourceVersion")) for q in fake.queries] == [
        (None, None),
        ("True", "10"),
        ("True", "10"),
    ]


async def test_garbage_on_the_stream_backs_off_and_keeps_the_version(
    serve: Callable[[FakeApiServer], Awaitable[client.ApiClient]],
) -> None:
    async def garbage(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"this is not json\n")
        return response

    fake = FakeApiServer([listed("10"), garbage, streamed(hold=True)])
    api = await serve(fake)
    watch = Watch(
        "pods in shop",
        client.CoreV1Api(api).list_namespaced_pod,
        lambda changes, cache: None,
        backoff=Backoff(first=0.01, limit=0.02),
        namespace="shop",
    )
    task = asyncio.create_task(watch.run())
    try:
        async with asyncio.timeout(5):
            await fake.done.wait()
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [q.get("resourceVersion") for q in fake.queries] == [None, "10", "10"]


async def test_a_stream_that_ends_at_once_and_empty_backs_off(
    serve: Callable[[FakeApiServer], Awaitable[client.ApiClient]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A proxy that cuts every watch at once must not make the shell spin on requests.
    fake = FakeApiServer([listed("10"), streamed(), streamed(), streamed(hold=True)])
    api = await serve(fake)
    watch = Watch(
        "pods in shop",
        client.CoreV1Api(api).list_namespaced_pod,
        lambda changes, cache: None,
        backoff=Backoff(first=0.2, limit=0.4),
        namespace="shop",
    )
    task = asyncio.create_task(watch.run())
    started = asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(5):
            await fake.done.wait()
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Two empty streams: 0.2 s, then 0.4 s of backoff before the third watch.
    assert asyncio.get_running_loop().time() - started >= 0.6
    assert [q.get("resourceVersion") for q in fake.queries] == [None, "10", "10", "10"]
    assert any("the stream ended at once" in r.getMessage() for r in caplog.records)
