"""Choosing the agent that dials a client's flow out of the cluster (`--proxy-via`).

A client names a workload its flow should leave the cluster from; any connected agent of
that workload can dial it from its pod. The chooser spreads flows across the replicas:
the agent with the fewest flows wins (a flow counts from the moment it is chosen, so a
burst of opens spreads before any is answered), and among equals the one chosen longest
ago (never chosen: first, by session id), so short flows go round robin. It only counts:
the caller names the connected agents and says when a flow ends.
"""

from __future__ import annotations

from collections.abc import Iterable


class EgressChooser:
    def __init__(self) -> None:
        self._flows: dict[str, int] = {}  # agent session → flows chosen and not ended
        self._chosen_at: dict[str, int] = {}  # agent session → the pick that last chose it
        self._picks = 0

    def choose(self, agents: Iterable[str]) -> str | None:
        """The agent (session id) to dial the next flow, counted as one of its flows;
        None when no agent is connected."""
        candidates = set(agents)
        if not candidates:
            return None
        chosen = min(
            candidates,
            key=lambda a: (self._flows.get(a, 0), self._chosen_at.get(a, -1), a),
        )
        self._picks += 1
        self._chosen_at[chosen] = self._picks
        self._flows[chosen] = self._flows.get(chosen, 0) + 1
        return chosen

    def ended(self, agent: str) -> None:
        """A flow `choose` gave this agent ended (refused, timed out or closed)."""
        left = self._flows.get(agent, 0) - 1
        if left > 0:
            self._flows[agent] = left
        else:
            self._flows.pop(agent, None)

    def forget(self, agent: str) -> None:
        """The agent left: nothing is kept of it."""
        self._flows.pop(agent, None)
        self._chosen_at.pop(agent, None)

    def flows(self, agent: str) -> int:
        return self._flows.get(agent, 0)
