"""The daemon's session bookkeeping without root: Connect's checks, the userd watchdog."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from kptest.waiting import eventually

from kubepresence.protocol.errors import ConfigError, UserError
from kubepresence.rootd import app
from kubepresence.rootd.core.network import NetworkRequest, plan
from kubepresence.rootd.rpc.connector import UserdUnreachableError
from kubepresence.rootd.vif import VifSession, VifSettings

REQUEST = NetworkRequest(
    session_id="client-1",
    pod_subnets=["10.244.0.0/24"],
    service_subnets=["10.96.0.0/16"],
    cluster_domain="cluster.local",
    dns_service_ip="10.96.0.10",
    search_namespaces=["demo"],
    connector_socket="/nonexistent/userd.socket",
    manager_socket="/nonexistent/userd-manager.socket",
)


class Pings:
    """A userd that answers `answers` pings, then fails the way it is told."""

    def __init__(self, answers: int, gone: bool) -> None:
        self.answers = answers
        self.gone = gone
        self.count = 0

    async def ping(self, seconds: float) -> None:
        self.count += 1
        if self.count > self.answers:
            raise UserdUnreachableError("no", gone=self.gone)


def session(silence: float = 0.3) -> VifSession:
    settings = VifSettings(userd_silence=silence, probe_interval=0.02)
    return VifSession(plan(REQUEST), settings)


async def test_a_refusing_userd_ends_the_session_at_once() -> None:
    vif = session(silence=60)
    pings = Pings(answers=3, gone=True)
    await asyncio.wait_for(vif._watch_userd(pings), 2)  # type: ignore[arg-type]
    assert pings.count == 4
    assert vif.stop_reason.startswith("userd went away")


async def test_a_silent_userd_ends_the_session_after_the_silence_limit() -> None:
    vif = session(silence=0.3)
    pings = Pings(answers=2, gone=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(vif._watch_userd(pings), 3)  # type: ignore[arg-type]
    assert loop.time() - started >= 0.3
    assert "has not answered" in vif.stop_reason
    assert pings.count > 5  # it kept asking meanwhile


async def test_an_answering_userd_keeps_the_session() -> None:
    vif = session(silence=0.1)
    pings = Pings(answers=10**9, gone=False)
    watch = asyncio.ensure_future(vif._watch_userd(pings))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Three silence limits, and the watch kept asking meanwhile: a watch that ignored the
    # answers would have ended by then.
    await eventually(
        lambda: loop.time() - started > 0.3 and pings.count > 5, "pings over 3 silence limits"
    )
    assert not watch.done()
    vif.request_stop("test over")
    await asyncio.wait_for(watch, 1)
    assert vif.stop_reason == "test over"


class FakeSupervisor:
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.append(task)
        return task


async def test_connect_checks_input_and_refuses_a_second_session(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def pretend_run(self: VifSession, ready: asyncio.Future[None]) -> None:
        ready.set_result(None)
        await self._stop.wait()
        self.done.set()

    monkeypatch.setattr(VifSession, "run", pretend_run)
    daemon = app.RootDaemon(tmp_path / "rootd.socket", 0, VifSettings(state_dir=tmp_path))
    supervisor = FakeSupervisor()
    daemon._supervisor = supervisor  # type: ignore[assignment]
    with pytest.raises(UserError, match="'nope' is not a CIDR"):
        await daemon.connect(dataclasses.replace(REQUEST, also_proxy=["nope"]))
    await daemon.connect(REQUEST)
    with pytest.raises(UserError, match="already connected"):
        await daemon.connect(REQUEST)
    assert await daemon.disconnect("test")
    assert not await daemon.disconnect("again")  # nothing left to take down
    await daemon.connect(REQUEST)  # a new session after the old one ended
    assert await daemon.disconnect("test")
    await asyncio.gather(*supervisor.tasks)


async def test_a_rootd_that_is_not_root_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    vif = session()
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await asyncio.wait_for(vif.run(ready), 5)
    with pytest.raises(ConfigError, match="runs as uid 1000: it must run as root") as raised:
        ready.result()
    assert "\n" not in str(raised.value)
    assert vif.done.is_set()


async def test_a_cancelled_connect_takes_its_session_down(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started = asyncio.Event()

    async def slow_run(self: VifSession, ready: asyncio.Future[None]) -> None:
        started.set()
        await self._stop.wait()
        self.done.set()

    monkeypatch.setattr(VifSession, "run", slow_run)
    daemon = app.RootDaemon(tmp_path / "rootd.socket", 0, VifSettings(state_dir=tmp_path))
    supervisor = FakeSupervisor()
    daemon._supervisor = supervisor  # type: ignore[assignment]
    connect = asyncio.get_running_loop().create_task(daemon.connect(REQUEST))
    await asyncio.wait_for(started.wait(), 1)
    connect.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connect
    await asyncio.wait_for(asyncio.gather(*supervisor.tasks), 1)  # the session stopped
    assert not daemon.status().connected
