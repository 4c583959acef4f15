"""Virtual addresses for cluster ranges the workstation cannot route (`--vnat`, `--proxy-via`).

A cluster range that collides with a local route (a VPN, the home network) is not routed
as itself: each cluster address in it that a DNS answer names gets an address of the
virtual subnet instead, handed out in order and kept for the session (the same cluster
address always gets the same virtual one, so cached answers stay right). The virtual
subnet is routed through the VIF; a flow to a virtual address is dialled in the cluster to
the address it stands for, from the manager (`--vnat`) or from an agent of the named
workload (`--proxy-via`). The first host address of the virtual subnet is kept for the
cluster DNS service when its own address is in a translated range. Sans-IO.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from kubepresence.rootd.core.subnets import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Translated:
    """A cluster range reached through virtual addresses; `via`: namespace/workload or ""."""

    cidr: Network
    via: str = ""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a flow to a virtual address goes in the cluster."""

    address: Address
    via: str = ""


class VirtualNetwork:
    """The session's virtual addresses (see the module docstring)."""

    def __init__(self, subnet: Network, translated: Sequence[Translated]) -> None:
        if subnet.num_addresses < 4:
            raise ValueError(f"the virtual subnet {subnet} is too small")
        self.subnet = subnet
        self.translated = tuple(translated)
        self.dns_address: Address = subnet.network_address + 1
        self._next = int(subnet.network_address) + 2
        self._last = int(subnet.broadcast_address) - 1
        self._virtual_of: dict[Address, Address] = {}
        self._real_of: dict[Address, Destination] = {}

    def rule_for(self, address: Address) -> Translated | None:
        """The translated range `address` is in (the most specific one), or None."""
        best: Translated | None = None
        for rule in self.translated:
            inside = address.version == rule.cidr.version and address in rule.cidr
            if inside and (best is None or rule.cidr.prefixlen > best.cidr.prefixlen):
                best = rule
        return best

    def virtual_for(self, real: Address) -> Address | None:
        """The virtual address standing for cluster address `real`: the same one each time;
        None when `real` is in no translated range, or the subnet is used up."""
        kept = self._virtual_of.get(real)
        if kept is not None:
            return kept
        rule = self.rule_for(real)
        if rule is None or real.version != self.subnet.version or self._next > self._last:
            return None
        virtual = ipaddress.ip_address(self._next)
        self._next += 1
        self._virtual_of[real] = virtual
        self._real_of[virtual] = Destination(real, rule.via)
        return virtual

    def destination_of(self, virtual: Address) -> Destination | None:
        """The cluster address a virtual one stands for (None: not handed out)."""
        return self._real_of.get(virtual)

    def bind_dns(self, real: Address) -> None:
        """The cluster DNS service, at the subnet's first host address."""
        rule = self.rule_for(real)
        self._real_of[self.dns_address] = Destination(real, rule.via if rule else "")
        self._virtual_of[real] = self.dns_address

    def mappings(self) -> list[tuple[Address, Destination]]:
        """(virtual, destination) for every address handed out, in order."""
        return sorted(self._real_of.items(), key=lambda item: int(item[0]))
