"""A daemon killed as a call connects: the call fails with a connection error (which
callers handle as "the peer is gone"), never with grpclib's AttributeError from a
connection it returned already closed. rootd's userd watch died of that in an e2e run."""

from __future__ import annotations

import collections
import socket
import threading
from pathlib import Path

import pytest
from grpclib.exceptions import StreamTerminatedError

from kubepresence.protocol.gen import connector
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.transport import unix_channel

CALLS = 300  # the race hit 80 calls in 300 before the fix


@pytest.mark.timeout(60)  # 300 connections; well under a second when the machine is idle
async def test_a_peer_that_closes_at_once_gives_connection_errors(tmp_path: Path) -> None:
    path = tmp_path / "closing.socket"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(CALLS)
    accepted = 0

    def close_each() -> None:  # another thread: the close races the client's connect
        nonlocal accepted
        while accepted < CALLS:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.close()
            accepted += 1

    closer = threading.Thread(target=close_each, daemon=True)
    closer.start()
    failures: collections.Counter[str] = collections.Counter()
    try:
        for _ in range(CALLS):
            channel = unix_channel(path)
            try:
                await connector.ConnectorStub(channel).version(protobuf.Empty(), timeout=5)
            except (OSError, StreamTerminatedError) as error:
                failures[type(error).__name__] += 1
            finally:
                channel.close()
    finally:
        listener.close()
        closer.join(5)
    assert sum(failures.values()) == CALLS, failures
