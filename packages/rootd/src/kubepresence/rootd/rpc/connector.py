"""rootd's client of userd's Connector service: DNS lookups and liveness.

grpclib failures of the channel itself (the socket refuses, the connection drops) come out
as `ConnectionError`, so callers can tell "userd is gone" from "this question failed".
"""

from __future__ import annotations

import logging
from pathlib import Path

from grpclib.exceptions import GRPCError, StreamTerminatedError

from kubepresence.protocol.gen import common, connector
from kubepresence.protocol.transport import unix_channel

log = logging.getLogger(__name__)


class UserdUnreachableError(ConnectionError):
    """userd did not answer; `gone` when its socket refuses (the process is not there)."""

    def __init__(self, message: str, gone: bool) -> None:
        super().__init__(message)
        self.gone = gone


class ConnectorClient:
    """A channel to userd's socket, with what rootd calls on it."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._channel = unix_channel(socket_path)
        self._stub = connector.ConnectorStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    async def ping(self, seconds: float) -> None:
        """Ask userd its version; UserdUnreachableError when it does not answer."""
        try:
            await self._stub.version(timeout=seconds)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise UserdUnreachableError(f"userd's socket refuses: {error}", gone=True) from None
        except (TimeoutError, OSError, StreamTerminatedError, GRPCError) as error:
            raise UserdUnreachableError(f"userd does not answer: {error!r}", gone=False) from None

    async def lookup_dns(
        self, session_id: str, name: str, qtype: int, seconds: float
    ) -> tuple[int, list[bytes]]:
        """The cluster's answer to a question: (rcode, each answer record packed alone)."""
        try:
            reply = await self._stub.lookup_dns(
                common.DnsRequest(session_id=session_id, name=name, qtype=qtype), timeout=seconds
            )
        except StreamTerminatedError as error:
            raise ConnectionResetError(f"userd: {error}") from None
        except GRPCError as error:
            raise LookupError(error.message or error.status.name) from None
        return int(reply.rcode), list(reply.answers)
