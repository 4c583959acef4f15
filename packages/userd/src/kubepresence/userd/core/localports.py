"""Whether a new intercept's local address is already another intercept's. Sans-IO.

Two intercepts that send to one local port mix two workloads' traffic in one local
server, silently. That is refused unless the user asks for it (`--share-local-port`).
An intercept of the same workload port is not this rule's business: the manager refuses
that one itself ("already intercepted").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ANY_ADDRESSES = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - compared, never bound


@dataclass(frozen=True)
class LocalTarget:
    """Where one intercept sends its traffic on the workstation."""

    name: str
    namespace: str
    workload: str
    port: str  # the service port it takes
    host: str
    local_port: int


def _same_address(a: str, b: str) -> bool:
    return a == b or a in ANY_ADDRESSES or b in ANY_ADDRESSES


def conflict(existing: Iterable[LocalTarget], new: LocalTarget) -> str | None:
    """Why `new` may not send to its local port, or None."""
    for other in existing:
        if (other.namespace, other.workload, other.port) == (new.namespace, new.workload, new.port):
            continue
        if other.local_port == new.local_port and _same_address(other.host, new.host):
            return (
                f"local port {new.local_port} already receives intercept {other.name!r}"
                f" ({other.namespace}/{other.workload}): pick another local port, or pass"
                " --share-local-port to send both there"
            )
    return None
