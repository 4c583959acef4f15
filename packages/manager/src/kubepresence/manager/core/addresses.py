"""Parsing the addresses the manager is told to listen on or to dial."""

from __future__ import annotations

import ipaddress

MAX_PORT = 65535


def parse_listen_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[V6]:PORT' → (host, port); raises ValueError with a clear reason."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)
    if not port_text.isdigit() or not 0 < int(port_text) <= MAX_PORT:
        raise ValueError(f"{text!r}: the port must be a number from 1 to {MAX_PORT}")
    return host, int(port_text)


def destination(ip: bytes, port: int) -> tuple[str, int]:
    """A flow's destination from its raw 4- or 16-byte address; ValueError if malformed."""
    if len(ip) not in (4, 16):
        raise ValueError(f"a destination address has 4 or 16 bytes, not {len(ip)}")
    if not 0 < port <= MAX_PORT:
        raise ValueError(f"destination port {port} is out of range")
    return str(ipaddress.ip_address(ip)), port
