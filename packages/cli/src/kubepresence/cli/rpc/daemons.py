"""Talking to the local daemons over their unix sockets, with deadlines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubepresence.protocol.errors import Category
from kubepresence.protocol.gen import common, connector, daemon
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.transport import client_errors, unix_channel

# Local daemons answer at once or not at all.
LOCAL_TIMEOUT = 5.0


@dataclass(frozen=True)
class UserdStatus:
    version: str
    state: str
    context: str
    namespace: str


def socket_is_live(path: Path) -> bool:
    """A socket file exists; whether someone listens is for the call to find out."""
    return path.is_socket()


async def userd_status(socket: Path) -> UserdStatus:
    channel = unix_channel(socket)
    try:
        stub = connector.ConnectorStub(channel, timeout=LOCAL_TIMEOUT)
        async with client_errors("the user daemon does not answer", Category.INTERNAL):
            version = await stub.version(protobuf.Empty())
            info = await stub.status(protobuf.Empty())
        state = connector.ConnectState(info.state).name.lower()
        return UserdStatus(version.version, state, info.context, info.namespace)
    finally:
        channel.close()


async def rootd_version(socket: Path) -> common.VersionInfo:
    channel = unix_channel(socket)
    try:
        stub = daemon.DaemonStub(channel, timeout=LOCAL_TIMEOUT)
        async with client_errors("the root daemon does not answer", Category.INTERNAL):
            return await stub.version(protobuf.Empty())
    finally:
        channel.close()


async def quit_userd(socket: Path) -> None:
    channel = unix_channel(socket)
    try:
        stub = connector.ConnectorStub(channel, timeout=LOCAL_TIMEOUT)
        async with client_errors("the user daemon does not answer", Category.INTERNAL):
            await stub.quit(protobuf.Empty())
    finally:
        channel.close()


async def quit_rootd(socket: Path) -> None:
    channel = unix_channel(socket)
    try:
        stub = daemon.DaemonStub(channel, timeout=LOCAL_TIMEOUT)
        async with client_errors("the root daemon does not answer", Category.INTERNAL):
            await stub.quit(protobuf.Empty())
    finally:
        channel.close()


async def set_userd_log_level(socket: Path, level: str, duration: int) -> None:
    channel = unix_channel(socket)
    try:
        stub = connector.ConnectorStub(channel, timeout=LOCAL_TIMEOUT)
        async with client_errors("the user daemon does not answer", Category.INTERNAL):
            await stub.set_log_level(common.LogLevelRequest(level=level, duration_seconds=duration))
    finally:
        channel.close()
