"""systemd-resolved while connected: whether it runs the machine's DNS, and what rootd sets
on the TUN link. Sans-IO.

Model
-----
Where systemd-resolved serves the machine (Ubuntu, Fedora: /etc/resolv.conf is its stub
file naming 127.0.0.53), rewriting resolv.conf would break the machine: the file is
resolved's, and the programs that ask resolved over D-Bus or nss-resolve would not see it
anyway. There rootd leaves resolv.conf alone and makes the TUN link one of resolved's links
instead (what `resolvectl dns/domain/default-route kp0 …` does, over D-Bus):

    DNS           <cluster DNS address>                 (answered by rootd on the VIF)
    Domains       ~<domain> ~<ns>… <ns>.svc.<domain>…
    DefaultRoute  no

`~x` is a routing-only domain: names under it go to this link's DNS and no other. The
search domains (no `~`) route too, and complete a single-label `svc` (in the order of the
session's namespaces). `svc.ns` reaches
rootd through `~ns` and is asked of the cluster as `svc.ns.svc.<domain>` (`dns.DnsPolicy`).
The link also gets an address resolved counts (`LINK_ADDRESSES`), or it ignores the link.
DefaultRoute off: every other name stays with the servers resolved used before, so
nothing else of the machine's resolver changes. `RevertLink` undoes all of it.

Namespaces named like a top-level domain (`dns.EXCLUDED_SUFFIXES`) get no routing domain:
a namespace called `com` must not swallow .com.

Detection (`choose_method`): resolved owns `org.freedesktop.resolve1` on the system bus
(what Telepresence checks), in rootd's network namespace (the bus is reachable from other
namespaces; link indexes are not), AND resolv.conf names its stub, so that the system's
lookups go through it. A resolved that runs beside a resolv.conf naming other servers is not the
machine's resolver: rootd rewrites resolv.conf as it does without resolved.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from kubepresence.rootd.core import resolvconf
from kubepresence.rootd.core.dns import EXCLUDED_SUFFIXES

# resolved's stub listeners (127.0.0.54 is its "proxy" stub, also resolved's).
STUB_ADDRESSES = frozenset({"127.0.0.53", "127.0.0.54"})
AF_INET = 2  # the address families of resolved's D-Bus API (Linux values)
# resolved gives a link a DNS scope only while it has a routable address (not loopback, not
# link-local), and the TUN has none of its own. One that no packet uses: a unique-local IPv6
# host address (its /128 route is local only), else the IPv4 dummy address of RFC 7600
# (also made for hosts that need an address and have none), where IPv6 is disabled. Never
# one inside the routed subnets: the kernel would deliver those locally, not to the TUN.
LINK_ADDRESSES = ("fd6b:7072:6573:7e::1/128", "192.0.0.8/32")
AF_INET6 = 10


class ResolverMethod(enum.Enum):
    """How rootd points the system resolver at the cluster."""

    RESOLVED = "systemd-resolved"  # per-link DNS on the TUN, over D-Bus
    RESOLV_CONF = "resolv.conf"  # resolv.conf rewritten in place


def choose_method(resolved_on_bus: bool, resolv_conf_text: str) -> ResolverMethod:
    """RESOLVED where resolved runs and resolv.conf sends the system's lookups to its stub."""
    if not resolved_on_bus:
        return ResolverMethod.RESOLV_CONF
    servers = resolvconf.parse(resolv_conf_text).nameservers
    if servers and all(server in STUB_ADDRESSES for server in servers):
        return ResolverMethod.RESOLVED
    return ResolverMethod.RESOLV_CONF


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """What rootd sets on the TUN link, in the shapes of resolved's D-Bus methods."""

    dns: tuple[tuple[int, bytes], ...]  # SetLinkDNS a(iay): (family, address bytes)
    domains: tuple[tuple[str, bool], ...]  # SetLinkDomains a(sb): (domain, routing only)
    default_route: bool = False  # SetLinkDefaultRoute b


def link_settings(
    dns_address: str,
    namespaces: Sequence[str],
    cluster_domain: str,
    *,
    also_routed: Sequence[str] = (),
    excluded: Sequence[str] = (),
) -> LinkSettings:
    """The TUN link's settings for a session (see the module docstring).

    `also_routed`: the user's `--dns-include-suffix` entries and `--dns-map` names, which
    rootd answers too; `excluded`: `--dns-exclude-suffix` entries, whose namespaces get no
    routing domain (rootd would send them upstream, which under resolved is resolved)."""
    address = ipaddress.ip_address(dns_address)
    family = AF_INET if address.version == 4 else AF_INET6
    domain = cluster_domain.strip().strip(".").lower()
    gone = {e.strip(".").lower() for e in excluded}
    routing: list[str] = [domain]
    for namespace in namespaces:
        name = namespace.lower()
        if (
            resolvconf.valid_namespace(name)
            and name not in EXCLUDED_SUFFIXES
            and name not in routing
            and name not in gone
        ):
            routing.append(name)
    # resolved completes single-label names only (it never searches `svc.ns`), so the
    # namespaces' service domains are the search list that matters; they route too.
    search = [f"{namespace}.svc.{domain}" for namespace in routing[1:]]
    extra = [n.strip(".").lower() for n in also_routed]
    routing += [n for n in dict.fromkeys(extra) if n and n not in routing]
    domains = [(name, True) for name in routing] + [(name, False) for name in search]
    return LinkSettings(dns=((family, address.packed),), domains=tuple(domains))


def shown_domains(settings: LinkSettings) -> list[str]:
    """The domains as resolvectl shows them (`~` marks a routing-only one): for logs."""
    return [("~" if routing else "") + name for name, routing in settings.domains]
