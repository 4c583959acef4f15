"""The identity of a flow: protocol and both ends, as the workstation's kernel sees them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

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

    @property
    def protocol_name(self) -> str:
        return {PROTO_TCP: "tcp", PROTO_UDP: "udp"}.get(self.protocol, str(self.protocol))

    def __str__(self) -> str:
        def end(address: Address, port: int) -> str:
            return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"

        source = end(self.source, self.source_port)
        destination = end(self.destination, self.destination_port)
        return f"{self.protocol_name} {source} -> {destination}"
