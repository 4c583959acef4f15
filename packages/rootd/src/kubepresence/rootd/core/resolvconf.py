"""resolv.conf while connected: what the original says, and what rootd writes instead. Sans-IO.

Model
-----
Without systemd-resolved, the system resolver is
whatever /etc/resolv.conf names. While connected rootd replaces it with

    nameserver <cluster DNS address>          (answered by rootd on the VIF)
    search <ns>.svc.<domain> … svc.<domain> <domain> <the original search entries>
    options ndots:5 <the original options but ndots>

so that `svc`, `svc.ns` and full cluster names all resolve through the cluster (the
search list turns them into names under the cluster domain), and remembers the original
nameservers: every question outside the cluster domain is forwarded to them. The original
bytes are restored unchanged on disconnect; this module only parses and renders.

Where systemd-resolved serves the machine, rootd does not touch resolv.conf: it sets
per-link DNS on the TUN instead (`core.resolved`, `net.resolving`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# resolv.conf(5): with no nameserver line the resolver asks the local machine.
DEFAULT_NAMESERVER = "127.0.0.1"
NDOTS = 5
HEADER = "# Written by kubepresence-rootd while connected; the original is restored on exit."
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    """The parts of a resolv.conf that rootd reads."""

    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    options: tuple[str, ...]


def parse(text: str) -> ResolverSettings:
    """Read nameserver, search/domain and options lines as the glibc resolver does.

    The last of `search` and `domain` wins; comments start with '#' or ';'.
    """
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        keyword, values = words[0], words[1:]
        if keyword == "nameserver" and values:
            nameservers.append(values[0])
        elif keyword in ("search", "domain"):
            search = [v.rstrip(".") for v in values if not v.startswith(("#", ";"))]
        elif keyword == "options":
            options.extend(values)
    return ResolverSettings(tuple(nameservers), tuple(search), tuple(options))


def valid_namespace(name: str) -> bool:
    """A Kubernetes namespace name (an RFC 1123 label)."""
    return bool(_LABEL.match(name))


def cluster_search(namespaces: Iterable[str], cluster_domain: str) -> list[str]:
    """`<ns>.svc.<domain>` for each namespace in order (once), then `svc.<domain>`, `<domain>`."""
    domain = cluster_domain.strip(".").lower()
    entries: list[str] = []
    for namespace in namespaces:
        entry = f"{namespace}.svc.{domain}"
        if entry not in entries:
            entries.append(entry)
    return [*entries, f"svc.{domain}", domain]


def render(
    original: ResolverSettings,
    dns_address: str,
    namespaces: Sequence[str],
    cluster_domain: str,
) -> bytes:
    """The resolv.conf rootd writes while connected."""
    search = cluster_search(namespaces, cluster_domain)
    search += [entry for entry in original.search if entry not in search]
    options = [f"ndots:{NDOTS}", *(o for o in original.options if not o.startswith("ndots:"))]
    lines = [
        HEADER,
        f"nameserver {dns_address}",
        f"search {' '.join(search)}",
        f"options {' '.join(options)}",
    ]
    return ("\n".join(lines) + "\n").encode()


def upstreams(original: ResolverSettings, dns_address: str) -> list[str]:
    """Where questions outside the cluster go: the original nameservers, never ourselves."""
    servers = [s for s in original.nameservers if s != dns_address]
    if not original.nameservers:
        servers = [DEFAULT_NAMESERVER]
    return servers
