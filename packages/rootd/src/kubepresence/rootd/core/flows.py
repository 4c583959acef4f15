"""The identity of a flow: protocol and both ends, as the workstation's kernel sees them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from kubepresence.rootd.core.packets import PROTO_TCP, PROTO_UDP

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class FlowId:
    """A 5-tuple. `source` is the local client, `destination` the cluster address it dialled."""

    protocol: int
    source: Address
    source_port: int
    destination: Address
    destination_port: int
    # Flows key several dicts on the per-packet path; ipaddress objects hash slowly.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_hash",
            hash(
                (
                    self.protocol,
                    self.source,
                    self.source_port,
                    self.destination,
                    self.destination_port,
                )
            ),
        )

    def __hash__(self) -> int:
        return self._hash

    @property
    def protocol_name(self) -> str:
        return {PROTO_TCP: "tcp", PROTO_UDP: "udp"}.get(self.protocol, str(self.protocol))

    def __str__(self) -> str:
        def end(address: Address, port: int) -> str:
            return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"

        source = end(self.source, self.source_port)
        destination = end(self.destination, self.destination_port)
        return f"{self.protocol_name} {source} -> {destination}"
