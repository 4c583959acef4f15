"""The agent table: which traffic agents are present, for WatchAgents.

An agent arrives with its pod's identity and the ports it took over, and is present while
its session lives (see `sessions`: Remain keeps it, Depart or silence past the TTL ends
it). One pod has at most one agent: an agent that arrives again for the same pod (after
losing the manager) replaces its earlier entry, and the caller ends the earlier session.

Watchers need "has anything changed since I last looked": every change bumps
`generation`, and `snapshot()` is the sorted list of agents at that generation. The table
only records; the caller supplies session ids and wakes watchers up.
"""

from __future__ import annotations

from collections.abc import Iterable

from kubepresence.protocol.agents import Agent


class AgentTable:
    def __init__(self) -> None:
        self._by_session: dict[str, Agent] = {}
        self._session_of_pod: dict[tuple[str, str], str] = {}
        self.generation = 0

    def arrive(self, session_id: str, agent: Agent) -> str | None:
        """Record the agent; returns the session id of an earlier agent of the same pod."""
        if not agent.pod_name or not agent.namespace:
            raise ValueError("an agent names its pod and namespace")
        if session_id in self._by_session:
            raise ValueError(f"session {session_id!r} has an agent already")
        replaced = self._session_of_pod.get(agent.pod)
        if replaced is not None:
            del self._by_session[replaced]
        self._by_session[session_id] = agent
        self._session_of_pod[agent.pod] = session_id
        self.generation += 1
        return replaced

    def depart(self, session_ids: Iterable[str]) -> list[Agent]:
        """Forget the agents of these sessions (ended or expired); returns those it knew."""
        gone = []
        for session_id in session_ids:
            agent = self._by_session.pop(session_id, None)
            if agent is None:
                continue
            if self._session_of_pod.get(agent.pod) == session_id:
                del self._session_of_pod[agent.pod]
            gone.append(agent)
        if gone:
            self.generation += 1
        return gone

    def get(self, session_id: str) -> Agent | None:
        return self._by_session.get(session_id)

    def session_of(self, namespace: str, pod: str) -> str | None:
        """The session of the pod's agent, if it has one here."""
        return self._session_of_pod.get((namespace, pod))

    def sessions_of_workload(self, namespace: str, workload: str) -> list[str]:
        """The sessions of the workload's present agents (one per pod)."""
        return sorted(
            session_id
            for session_id, agent in self._by_session.items()
            if agent.namespace == namespace and agent.workload_name == workload
        )

    def snapshot(self) -> list[Agent]:
        """Every present agent, sorted by namespace and pod name."""
        return sorted(self._by_session.values(), key=lambda a: a.pod)

    def __len__(self) -> int:
        return len(self._by_session)
