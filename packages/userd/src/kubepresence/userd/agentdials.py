"""Inbound connections straight from the agents: one port-forward per agent pod.

For every agent pod of a workload we have an active intercept on, userd port-forwards to
the agent's `direct_port` and watches its dials there (the agent's `direct`): those pods
then hand our connections to us without the traffic manager, one Python hop less per
byte. Replicas each get their own watch; pods that come and go (a rollout, a scale) are
followed every few seconds and whenever our intercepts change; after arriving again at a
restarted manager the watches start anew under the new session. Where the port-forward
is refused (the user may not port-forward to that namespace's pods) or fails, that
pod's connections keep coming through the manager, whose dial watch always runs; `status`
says which way they come and why (`summary`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubepresence.protocol.errors import KubepresenceError
from kubepresence.protocol.transport import CONFIGURATION
from kubepresence.userd.answering import answer_dials
from kubepresence.userd.k8s.portforward import PortForwarder
from kubepresence.userd.k8s.portforward_grpc import PortForwardChannel
from kubepresence.userd.rpc.agent import AgentClient
from kubepresence.userd.rpc.manager import Dial, InterceptView, ManagerClient

log = logging.getLogger(__name__)

REFRESH = 5.0  # how often the agent pods are looked at again, at most


@dataclass(frozen=True, order=True)
class AgentPod:
    namespace: str
    pod: str
    port: int  # the agent's direct_port

    def __str__(self) -> str:
        return f"{self.namespace}/{self.pod}"


def inbound_summary(pods: list[AgentPod], up: set[AgentPod], problems: dict[AgentPod, str]) -> str:
    """Which way the connections of `pods` come: straight when each one's watch is up
    without a problem, else through the manager, with why; "" when there are no pods."""
    if not pods:
        return ""
    direct = [p for p in pods if p in up and p not in problems]
    if len(direct) == len(pods):
        return f"straight from the agents ({len(pods)} pod(s), port-forward to each)"
    others = [p for p in pods if p not in direct]
    reasons = sorted({problems.get(p, "the port-forward is opening") for p in others})
    return (
        f"through the traffic manager for {len(others)} of {len(pods)} agent pod(s) "
        f"({', '.join(map(str, others))}): {'; '.join(reasons)}"
    )


class _Watching:
    """An agent's dials, telling `up` when the watch answers (the agent says so at once)."""

    def __init__(self, agent: AgentClient, up: Callable[[], None]) -> None:
        self._agent = agent
        self._up = up

    async def watch_dials(self, session_id: str) -> AsyncIterator[Dial]:
        async for dial in self._agent.watch_dials(session_id):
            self._up()
            yield dial

    def answer_dial(
        self, session_id: str, dial_id: str
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._agent.answer_dial(session_id, dial_id)


class AgentDials:
    """Keeps one dial watch per agent pod of our active intercepts while `run` runs."""

    def __init__(
        self,
        manager: ManagerClient,
        ws_api: Any,
        port_forward: str,
        session: Callable[[], str],
        intercepts: Callable[[], list[InterceptView]],
        changed: Callable[[], Awaitable[None]],
        pause: Callable[[float, str], Awaitable[None]],
    ) -> None:
        """`intercepts`: ours now; `changed`: returns when they change; `pause` as for
        `answer_dials`."""
        self._manager = manager
        self._ws_api = ws_api
        self._port_forward = port_forward
        self._session = session
        self._intercepts = intercepts
        self._changed = changed
        self._pause = pause
        self._watches: dict[AgentPod, asyncio.Task[None]] = {}
        self._watched_session = ""  # the session the watches name (an agent posts by it)
        self.up: set[AgentPod] = set()  # pods that post our dials straight to us
        self.problems: dict[AgentPod, str] = {}  # pods whose dials come through the manager

    def summary(self) -> str:
        """One line for `status`: which way intercepted connections come; "" for none."""
        return inbound_summary(sorted(self._watches), self.up, self.problems)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    if self._session() != self._watched_session:
                        # Arrived again (a restarted manager): the intercepts name the new
                        # session, so the agents post for it; watch anew under it.
                        self._follow(set(), group)
                        self._watched_session = self._session()
                    wanted = await self._wanted()
                    if wanted is not None:
                        self._follow(wanted, group)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(REFRESH):
                            await self._changed()
        finally:
            for task in self._watches.values():
                task.cancel()

    async def _wanted(self) -> set[AgentPod] | None:
        """The agent pods of our active intercepts' workloads; None: cannot tell now."""
        workloads = {(i.namespace, i.workload) for i in self._intercepts() if i.state == "active"}
        if not workloads:
            return set()
        try:
            agents = await self._manager.agents(self._session())
        except KubepresenceError as error:
            log.info("cannot list the agents now: %s", error.message)
            return None
        return {
            AgentPod(a.namespace, a.pod_name, a.direct_port)
            for a in agents
            if a.direct_port and (a.namespace, a.workload_name) in workloads
        }

    def _follow(self, wanted: set[AgentPod], group: asyncio.TaskGroup) -> None:
        for pod in set(self._watches) - wanted:
            log.info("no more dials to watch at %s", pod)
            self._watches.pop(pod).cancel()
            self.up.discard(pod)
            self.problems.pop(pod, None)
        for pod in sorted(wanted - set(self._watches)):
            log.info("watching our dials at the agent in %s (port %d)", pod, pod.port)
            self._watches[pod] = group.create_task(self._watch(pod), name=f"agent-dials {pod}")

    async def _watch(self, pod: AgentPod) -> None:
        forwarder = PortForwarder(
            self._ws_api, pod.namespace, pod.pod, pod.port, self._port_forward
        )
        channel = PortForwardChannel(forwarder, CONFIGURATION)
        ready = asyncio.Event()
        forwarding = asyncio.create_task(channel.run(ready), name=f"port-forward {pod}")
        try:
            await ready.wait()

            def up() -> None:
                if pod not in self.up or pod in self.problems:
                    log.info("our dials at %s now come straight from its agent", pod)
                self.up.add(pod)
                self.problems.pop(pod, None)

            def trouble(problem: str) -> None:
                if pod not in self.problems:
                    log.info("dials at %s come through the manager: %s", pod, problem)
                self.problems[pod] = problem
                self.up.discard(pod)

            await answer_dials(
                _Watching(AgentClient(channel, str(pod)), up),
                self._session,
                self._pause,
                on_trouble=trouble,
            )
        finally:
            channel.close()
            forwarding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forwarding
