"""Reaching the app's real port wherever the app listens: loopback or the pod's IP.

An app may bind its port on 127.0.0.1, on 0.0.0.0, or on the pod's IP only (a server that
binds `(POD_IP, 8080)`, as many frameworks do when given the pod's address). Before the
agent came, the kubelet and the Service reached it on the pod's IP; the agent, sitting in
the same pod, must too. It tries loopback first (what most apps bind, and the fastest
path), then the pod's IP, and remembers per port which answered, so the next connection
goes straight there. Only a refusal moves on to the next address: a timeout is the app's
trouble, not a sign it listens elsewhere.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
STREAM_LIMIT = 1024 * 1024


def candidates(pod_ip: str, preferred: str | None) -> list[str]:
    """The addresses to try for one dial, in order (no duplicates)."""
    order = [preferred] if preferred else []
    order += [LOOPBACK, pod_ip] if pod_ip else [LOOPBACK]
    return list(dict.fromkeys(a for a in order if a))


class AppDialer:
    """Opens connections to the app's ports (the caller bounds the time)."""

    def __init__(self, pod_ip: str = "") -> None:
        self.pod_ip = pod_ip
        self._answered: dict[int, str] = {}  # port -> the address that last accepted

    def address_of(self, port: int) -> str:
        return self._answered.get(port, LOOPBACK)

    async def open(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        refused: OSError | None = None
        for host in candidates(self.pod_ip, self._answered.get(port)):
            try:
                opened = await asyncio.open_connection(host, port, limit=STREAM_LIMIT)
            except ConnectionRefusedError as error:
                refused = error
                continue
            if self._answered.get(port) != host:
                log.info("the app answers on %s:%d", host, port)
                self._answered[port] = host
            return opened
        assert refused is not None
        raise refused
