"""Which TCP destinations answered a dial recently, so that a new connection to them can
complete its handshake at once.

A SYN to a cluster address normally waits for the manager's dial (CONNECTED completes the
handshake, a failed dial refuses it: the client sees "connection refused"). That costs
every new connection one round trip through the port-forward before its first byte can
go out. `kubectl port-forward` accepts locally first. A destination that answered within
`ttl` seconds is taken to answer again: its SYN is accepted at once and the dial runs
while the client sends. If the dial fails after all, the connection is reset and the
destination is forgotten, so the next SYN waits and is refused as usual.

Plain class, no clock: the caller passes `now` (seconds, monotonic).
"""

from __future__ import annotations

from collections import OrderedDict

from kubepresence.rootd.core.flows import Address

Destination = tuple[Address, int]  # (address, port) as the client dialled it

TTL = 30.0  # seconds an answer counts for
CAPACITY = 4096  # destinations remembered; the least recently answering go first


class AnsweringDestinations:
    def __init__(self, ttl: float = TTL, capacity: int = CAPACITY) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._answered: OrderedDict[Destination, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answered)

    def answered(self, destination: Destination, now: float) -> None:
        """A dial to `destination` succeeded at `now`."""
        self._answered[destination] = now
        self._answered.move_to_end(destination)
        while len(self._answered) > self._capacity:
            self._answered.popitem(last=False)

    def failed(self, destination: Destination) -> None:
        """A dial to `destination` failed: its next SYN waits for the dial again."""
        self._answered.pop(destination, None)

    def answers(self, destination: Destination, now: float) -> bool:
        """Whether a SYN to `destination` may be accepted before its dial completes."""
        since = self._answered.get(destination)
        if since is None:
            return False
        if now - since > self._ttl:
            del self._answered[destination]
            return False
        return True
