"""Delays between failed attempts: doubling from `first` up to `limit`, and whether a
failure is news.

Every retry loop of the parts (the agent's and the user daemon's sessions with the
manager, their watches, the manager's Kubernetes watches) waits the same way: the first
failure waits `first`, each further consecutive failure twice the last wait, never more
than `limit`; a success starts over. A failure's reason is worth logging only when it
differs from the last one (`failed` says so), so a long outage logs once, not every few
seconds; `succeeded` says whether there was a failure to recover from.

Sans-IO: no clock, no sleeping. The caller sleeps the delay it is given.
"""

from __future__ import annotations


class Backoff:
    """Delays between failed attempts, and whether a failure is news (see the docstring)."""

    def __init__(self, *, first: float, limit: float) -> None:
        if not 0 < first <= limit:
            raise ValueError(f"backoff: 0 < first <= limit (first {first}, limit {limit})")
        self.first = first
        self.limit = limit
        self.delay = 0.0  # the last wait given; 0 after a success
        self._reason: str | None = None

    @property
    def failing(self) -> bool:
        """Whether the last attempt failed (a failure since the last success)."""
        return self.delay > 0

    @property
    def next_delay(self) -> float:
        """The wait the next failure gets (for a message written before it is counted)."""
        return self.first if self.delay == 0 else min(self.delay * 2, self.limit)

    def failed(self, reason: str = "") -> tuple[float, bool]:
        """(seconds to wait, whether `reason` is news: the first failure since a
        success, or a reason other than the last one)."""
        self.delay = self.next_delay
        news = reason != self._reason
        self._reason = reason
        return self.delay, news

    def succeeded(self) -> bool:
        """Start over; True when there had been a failure (worth a 'works again' line)."""
        recovered = self.failing
        self.delay = 0.0
        self._reason = None
        return recovered
