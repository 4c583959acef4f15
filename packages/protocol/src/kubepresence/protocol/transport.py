"""gRPC servers and channels over unix sockets and TCP, with the project's error rules.

Every server built here translates `KubepresenceError` raised by a servicer into the gRPC
status of its category (see `errors`), and can refuse peers whose uid is not the one
allowed (rootd serves only the user that started it). Clients wrap calls in
`client_errors()` to get the category back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

from grpclib._typing import IServerMethodFunc
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.events import RecvRequest, listen
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.protocol import H2Protocol
from grpclib.server import Server, Stream

from kubepresence.protocol import h2tuning, logs
from kubepresence.protocol.codec import TunnelCodec
from kubepresence.protocol.errors import (
    Category,
    KubepresenceError,
    from_grpc_error,
    to_grpc_error,
    unexpected_error_message,
)

log = logging.getLogger(__name__)
h2tuning.install()  # every part's gRPC goes through this module

# h2 defaults (16 KiB frames, 64 KiB windows) cost a Python-level round of work per frame;
# the tunnel carries bulk data, so both ends use large frames and windows. Windows of 4 MiB
# move as fast as 16 MiB ones here, and a fast sender parks less in a slow receiver's
# memory (bench: agent 66 -> 55 MiB, userd 81 -> 74 MiB peak under load).
_WINDOW = 4 * 1024 * 1024
CONFIGURATION = Configuration(
    http2_connection_window_size=_WINDOW, http2_stream_window_size=_WINDOW
)
# Every part's servers and channels: protobuf, with a short way for tunnel payloads.
CODEC = TunnelCodec()


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def translated(method: IServerMethodFunc) -> IServerMethodFunc:
    """`method` with the error rules of every server here (see the module's docstring)."""

    async def with_errors(stream: Stream[Any, Any]) -> None:
        try:
            await method(stream)
        except KubepresenceError as error:
            raise to_grpc_error(error) from error
        except (GRPCError, StreamTerminatedError):
            raise
        except BaseExceptionGroup as group:
            # A servicer's task group ends with the failure of one of its tasks: when that
            # is an expected one (a peer's stream lost, a KubepresenceError), it is that.
            expected = _expected_leaf(group)
            if expected is None:
                log.exception("unexpected error in %s", getattr(method, "__qualname__", method))
                message = unexpected_error_message(group, logs.log_location())
                raise GRPCError(Status.INTERNAL, message) from group
            if isinstance(expected, KubepresenceError):
                raise to_grpc_error(expected) from group
            raise expected from group
        except Exception as error:
            # A bug: the traceback goes to the log and the client gets one line that says
            # where it is (grpclib alone would answer a bare "Internal Server Error").
            log.exception("unexpected error in %s", getattr(method, "__qualname__", method))
            message = unexpected_error_message(error, logs.log_location())
            raise GRPCError(Status.INTERNAL, message) from error

    return with_errors


def _expected_leaf(
    group: BaseExceptionGroup[BaseException],
) -> KubepresenceError | GRPCError | StreamTerminatedError | None:
    """The first failure of a group whose failures are all expected ones; else None."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    expected = (KubepresenceError, GRPCError, StreamTerminatedError)
    if not leaves or not all(isinstance(leaf, expected) for leaf in leaves):
        return None
    first = leaves[0]
    assert isinstance(first, expected)
    return first


def _install_request_hooks(server: Server, allowed_uids: Collection[int] | None) -> None:
    async def on_request(event: RecvRequest) -> None:
        if allowed_uids is not None:
            # grpclib does not expose the socket of a peer; its transport does.
            transport = event.peer._transport
            sock = transport.get_extra_info("socket")
            uid = peer_uid(sock) if sock is not None else -1
            if uid not in allowed_uids:
                log.warning("refused %s from uid %d", event.method_name, uid)
                raise GRPCError(Status.PERMISSION_DENIED, "this socket serves another user")
        event.method_func = translated(event.method_func)

    listen(server, RecvRequest, on_request)


def remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a crashed process; refuse to replace a live one."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise KubepresenceError(f"another process already serves {path}")


async def serve_unix(
    handlers: Collection[Any],
    path: Path,
    *,
    mode: int = 0o600,
    allowed_uids: Collection[int] | None = None,
    owner_uid: int | None = None,
) -> Server:
    """Start a gRPC server on a unix socket with the given mode (and owner)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    remove_stale_socket(path)
    server = Server(list(handlers), codec=CODEC, config=CONFIGURATION)
    _install_request_hooks(server, allowed_uids)
    # Create the socket with no permissions for anyone else, then open it up to `mode`.
    old_umask = os.umask(0o177)
    try:
        await server.start(path=str(path))
    finally:
        os.umask(old_umask)
    path.chmod(mode)  # noqa: ASYNC240 - once at start-up, before any call is served
    if owner_uid is not None:
        os.chown(path, owner_uid, -1)
    log.info("serving %s", path)
    return server


async def serve_tcp(handlers: Collection[Any], host: str, port: int) -> Server:
    """Start a gRPC server on a TCP address (in-cluster parts)."""
    server = Server(list(handlers), codec=CODEC, config=CONFIGURATION)
    _install_request_hooks(server, None)
    await server.start(host, port)
    log.info("serving %s:%d", host, port)
    return server


async def close_server(server: Server, grace: float = 3.0) -> None:
    """Stop accepting, give running calls `grace` seconds, then drop them."""
    server.close()
    try:
        async with asyncio.timeout(grace):
            await server.wait_closed()
    except TimeoutError:
        log.warning("calls still running after %.1f s at shutdown; dropping them", grace)


class _Channel(Channel):
    """grpclib's channel, without its race on a connection lost as it opens: grpclib
    returns the new connection without looking whether the peer already closed it (a
    daemon killed just then), and the call then fails inside grpclib with an
    AttributeError instead of a connection error. In one run, 80 calls in 300 to a socket
    that accepts and closes at once failed that way (test_transport_channels)."""

    async def _create_connection(self) -> H2Protocol:
        protocol = await super()._create_connection()
        if getattr(protocol.handler, "connection_lost", False):  # the client Handler has it
            raise ConnectionResetError("the connection was closed as it opened")
        return protocol


def unix_channel(path: Path) -> Channel:
    """A channel to a local daemon's socket."""
    return _Channel(path=str(path), codec=CODEC, config=CONFIGURATION)


# How long one attempt to open a connection may take (name lookup and TCP handshake).
CONNECT_TIMEOUT = 5.0


class _BoundedConnectChannel(_Channel):
    """grpclib opens a connection under a lock that every call on the channel waits for,
    and bounds the attempt only by the deadline of the call that started it. A call
    without one (a watch) whose SYN is lost, say to a pod that just went away while
    kube-proxy still sends its Service there, held the lock through the kernel's SYN
    retries (about two minutes), and every other call ran out of time behind it."""

    def __init__(self, host: str, port: int, connect_timeout: float) -> None:
        super().__init__(host, port, codec=CODEC, config=CONFIGURATION)
        self._connect_timeout = connect_timeout

    async def _create_connection(self) -> H2Protocol:
        async with asyncio.timeout(self._connect_timeout):
            return await super()._create_connection()


def tcp_channel(host: str, port: int, connect_timeout: float = CONNECT_TIMEOUT) -> Channel:
    """A channel to a part in the cluster; each connection attempt is bounded."""
    return _BoundedConnectChannel(host, port, connect_timeout)


@contextlib.asynccontextmanager
async def client_errors(what: str, unreachable: Category = Category.CLUSTER) -> AsyncIterator[None]:
    """Turn the failure of an RPC into a `KubepresenceError` of the right category.

    A status from the server keeps the server's category; a peer that cannot be reached
    or misses the deadline gets `unreachable` (a local daemon that does not answer is a
    bug; a manager that does not answer is the cluster's trouble).
    """
    try:
        yield
    except GRPCError as error:
        raise from_grpc_error(error) from error
    except TimeoutError as error:
        raise KubepresenceError(f"{what}: no answer in time", unreachable) from error
    except (OSError, StreamTerminatedError) as error:
        raise KubepresenceError(f"{what}: {error}", unreachable) from error
