"""The machine's routing table and links, read and cleaned with the `ip` command.

Blocking (runs `ip`): call these from a thread. Routes are read from every table, IPv4
and IPv6, as JSON; what counts as a conflict is decided in `core.network`.
"""

from __future__ import annotations

import json
import logging
import subprocess
from typing import Any

log = logging.getLogger(__name__)

_IP_TIMEOUT = 10.0


class RoutingError(OSError):
    """`ip` failed or printed something unexpected."""


def _ip_json(*args: str) -> list[dict[str, Any]]:
    command = ["ip", "-j", *args]
    try:
        result = subprocess.run(
            command, check=True, capture_output=True, timeout=_IP_TIMEOUT, text=True
        )
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or error
        raise RoutingError(0, f"{' '.join(command)}: {str(detail).strip()}") from None
    text = result.stdout.strip()
    if not text:
        return []
    try:
        entries = json.loads(text)
    except ValueError as error:
        raise RoutingError(0, f"{' '.join(command)}: unreadable output: {error}") from None
    return [e for e in entries if isinstance(e, dict)]


def read_routes() -> list[dict[str, Any]]:
    """Every route of every table, IPv4 then IPv6, as `ip -j` prints them."""
    return [
        *_ip_json("-4", "route", "show", "table", "all"),
        *_ip_json("-6", "route", "show", "table", "all"),
    ]


def link_kind(name: str) -> str | None:
    """The kind of link `name` ("tun", "veth"…), "" for a plain one, None if there is none."""
    try:
        links = _ip_json("-d", "link", "show", "dev", name)
    except RoutingError:
        return None  # "Device does not exist"
    if not links:
        return None
    info = links[0].get("linkinfo") or {}
    return str(info.get("info_kind", ""))


def delete_stale_tun(name: str) -> bool:
    """Delete TUN device `name` if one is left (a persistent one, or a stuck process's)."""
    kind = link_kind(name)
    if kind is None:
        return False
    if kind != "tun":
        log.warning("a %s link named %s exists; it is not ours, leaving it", kind or "plain", name)
        return False
    subprocess.run(["ip", "link", "delete", "dev", name], check=False, timeout=_IP_TIMEOUT)
    log.info("deleted the stale TUN device %s", name)
    return True
