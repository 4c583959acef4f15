"""The log level `kubepresence loglevel` set for the cluster's parts. Sans-IO: the caller
hands in the time.

The manager applies a level to itself and keeps it here for its agents: an agent that
arrives (or arrives again) while a level is in force gets it with the time it has left.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LevelInForce:
    level: str
    seconds_left: float  # 0: until set again


class ClusterLogLevel:
    def __init__(self) -> None:
        self._level = ""
        self._until: float | None = None  # None: no end
        self.changes = 0  # bumped by every set: watchers compare

    def set(self, level: str, seconds: float, now: float) -> None:
        self._level = level
        self._until = now + seconds if seconds > 0 else None
        self.changes += 1

    def in_force(self, now: float) -> LevelInForce | None:
        """The level to apply now, or None (never set, or its time is over)."""
        if not self._level:
            return None
        if self._until is None:
            return LevelInForce(self._level, 0)
        left = self._until - now
        return LevelInForce(self._level, left) if left > 0 else None
