"""The arrival loop's shell: it does what the decision says, against a fake cluster.

Scenarios: a bare ReplicaSet's old pod is replaced and the loop ends when the agents are
known; pods the webhook lets pass are replaced for three rounds, then the template goes
back and the user reads why; an intercept in error ends the wait with the manager's
message; a wait that runs out says what it was stuck at; the spinner's step is there
while waiting and gone after.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from kubepresence.protocol.errors import ClusterError
from kubepresence.userd.core.arrival import PodView
from kubepresence.userd.engaging import ArrivalLoop
from kubepresence.userd.k8s.agents import Arrival
from kubepresence.userd.rpc.manager import InterceptView

VIEW = InterceptView(
    id="i-1",
    name="echo",
    namespace="default",
    workload="echo",
    port="8080",
    local_host="127.0.0.1",
    local_port=8080,
    state="waiting",
    message="",
    environment={},
)
AGENT = PodView("echo-a", has_agent=True, ready=True, phase="Running")
OLD = PodView("echo-o", has_agent=False, ready=True, current=False, phase="Running")
PLAIN = PodView("echo-p", has_agent=False, ready=True, phase="Running")


class FakeCluster:
    """Scripted workload snapshots (the last one repeats) and a recording of the calls."""

    def __init__(
        self,
        workloads: list[Arrival],
        states: list[str],
        steps: dict[str, str],
        known: set[str] | None = None,
    ) -> None:
        self._workloads = workloads
        self._states = states
        self._steps = steps
        self.known = known if known is not None else {"echo-a"}
        self.replaced: list[list[str]] = []
        self.restored: list[str] = []
        self.steps_seen: list[str] = []
        self.confirms = 0
        self.asked_twice = asyncio.Event()

    def intercept(self, view: InterceptView) -> InterceptView:
        state = self._states.pop(0) if len(self._states) > 1 else self._states[0]
        return replace(view, state=state, message="boom" if state == "error" else "")

    async def workload(self) -> Arrival:
        return self._workloads.pop(0) if len(self._workloads) > 1 else self._workloads[0]

    async def replace(self, pods: list[str]) -> None:
        self.replaced.append(pods)

    async def confirm(self) -> tuple[set[str], set[str] | None]:
        self.confirms += 1
        if self.confirms == 2:
            self.asked_twice.set()
        return self.known, None

    async def changed(self) -> None:
        self.steps_seen.append(self._steps.get(VIEW.id, ""))  # shown while it waits
        await asyncio.Event().wait()  # no change comes: the loop looks again after `poll`

    async def restore_template(self, why: str) -> None:
        self.restored.append(why)


def bare(*pods: PodView, replicas: int = 1) -> Arrival:
    return Arrival("ReplicaSet", replicas, list(pods), replaces_pods=False)


def rolling(*pods: PodView, replicas: int = 1) -> Arrival:
    return Arrival("Deployment", replicas, list(pods), replaces_pods=True)


async def test_a_bare_replicasets_old_pod_is_replaced_until_the_agent_is_known() -> None:
    steps: dict[str, str] = {}
    cluster = FakeCluster(
        [bare(OLD), bare(OLD), bare(AGENT)], ["waiting", "waiting", "active"], steps
    )
    view = await ArrivalLoop(cluster, VIEW, "default/echo", steps, wait=5, poll=0.01).run()
    assert view.state == "active"
    assert cluster.replaced == [["echo-o"]]  # once, not again while it goes
    assert cluster.steps_seen[:2] == ["injecting the agent: 1 pod to replace"] * 2
    assert cluster.confirms == 1
    assert steps == {}  # the step goes with the wait


async def test_an_agent_the_manager_does_not_know_yet_is_asked_for_again() -> None:
    steps: dict[str, str] = {}
    cluster = FakeCluster([rolling(AGENT)], ["active"], steps, known=set())
    loop = ArrivalLoop(cluster, VIEW, "default/echo", steps, wait=5, poll=0.01)
    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        task = group.create_task(loop.run())
        await cluster.asked_twice.wait()
        assert not task.done()
        assert cluster.steps_seen[-1] == (
            "waiting for the agent of pod echo-a to report to the traffic manager"
        )
        cluster.known = {"echo-a"}
    assert task.result().id == VIEW.id


async def test_a_pod_replaced_once_is_not_deleted_again_while_it_goes() -> None:
    steps: dict[str, str] = {}
    cluster = FakeCluster([rolling(PLAIN)], ["waiting"], steps)
    loop = ArrivalLoop(cluster, VIEW, "default/echo", steps, wait=0.2, poll=0.01)
    with pytest.raises(ClusterError) as stuck:
        await loop.run()
    assert cluster.replaced == [["echo-p"]]
    assert loop.snapshot.webhook_rounds == 1
    assert not cluster.restored  # one round only: then it waits (and here, runs out)
    assert "the agents did not arrive in 0 s: the new pods of default/echo" in (stuck.value.message)


async def test_new_pods_the_webhook_passes_by_four_times_restore_the_template() -> None:
    steps: dict[str, str] = {}
    passed = [rolling(replace(PLAIN, name=f"echo-p{i}")) for i in range(5)]
    cluster = FakeCluster(passed, ["waiting"], steps)
    loop = ArrivalLoop(cluster, VIEW, "default/echo", steps, wait=5, poll=0.01)
    with pytest.raises(ClusterError) as stuck:
        await loop.run()
    assert cluster.replaced == [["echo-p0"], ["echo-p1"], ["echo-p2"]]
    message = stuck.value.message
    assert "webhook did not inject the agent (4 tries): the new pods of " in message
    assert message.endswith("; the pod template was put back")
    assert cluster.restored == [message.removesuffix("; the pod template was put back")]
    assert steps == {}


async def test_an_intercept_in_error_ends_the_wait_with_the_managers_message() -> None:
    steps: dict[str, str] = {}
    cluster = FakeCluster([rolling(AGENT)], ["error"], steps)
    with pytest.raises(ClusterError, match=r"^intercept echo: boom$"):
        await ArrivalLoop(cluster, VIEW, "default/echo", steps, wait=5, poll=0.01).run()


async def test_a_wait_that_runs_out_says_what_it_was_stuck_at() -> None:
    steps: dict[str, str] = {}
    unready = PodView("echo-u", has_agent=True, ready=False, phase="Pending")
    cluster = FakeCluster([rolling(unready)], ["waiting"], steps)
    loop = ArrivalLoop(cluster, VIEW, "default/echo", steps, wait=0.2, poll=0.01)
    with pytest.raises(ClusterError) as stuck:
        await loop.run()
    assert stuck.value.message == (
        "intercept echo: the agents did not arrive in 0 s: pod echo-u is not Ready (Pending): "
        "no condition says why"
    )
    assert "waiting for pod echo-u to be Ready" in cluster.steps_seen
    assert steps == {}


async def test_what_follows_the_arrival_runs_within_the_same_wait() -> None:
    steps: dict[str, str] = {}
    cluster = FakeCluster([rolling(AGENT)], ["active"], steps)
    called: list[str] = []

    async def arrived(view: InterceptView) -> None:
        called.append(view.state)

    view = await ArrivalLoop(cluster, VIEW, "default/echo", steps, wait=5, poll=0.01).run(arrived)
    assert (view.state, called) == ("active", ["active"])

    async def hangs(view: InterceptView) -> None:
        await asyncio.Event().wait()  # e.g. a mount that does not end

    loop = ArrivalLoop(cluster, VIEW, "default/echo", steps, wait=0.2, poll=0.01)
    with pytest.raises(ClusterError, match=r"^intercept echo: the agents did not arrive in 0 s"):
        await loop.run(hangs)
