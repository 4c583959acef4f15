"""Relaying one tunnel flow between a gRPC stream and a TCP connection.

A tunnel is one gRPC stream carrying one flow (see TunnelMessage in common.proto and the
words in `kubepresence.protocol.streams`): the open first, then `data` messages both
ways, `CONNECTED` or `DIAL_FAILED` from the side that dials, `WRITE_CLOSED` for a
half-close, `RESET` to abort. The manager relays a client flow to the destination it
dialled in the cluster; the user daemon relays an intercepted flow to the local process;
an agent relays a hand-over or an egress flow. All use `relay`, over the server or the
client side of a grpclib stream (both offer send_message/recv_message).

The flow ends when both directions are closed, when either side resets, or when nothing
moved for `idle_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from kubepresence.protocol.gen.common import TunnelControl, TunnelControlCode, TunnelMessage

log = logging.getLogger(__name__)

# Large reads coalesce payload into few messages: per-message cost dominates in Python.
READ_SIZE = 256 * 1024


class FlowResetError(Exception):
    """The peer aborted the flow."""


class MessageStream(Protocol):
    async def send_message(self, message: TunnelMessage) -> None: ...
    async def recv_message(self) -> TunnelMessage | None: ...


def control(code: TunnelControlCode, message: str = "") -> TunnelMessage:
    return TunnelMessage(control=TunnelControl(code=code, message=message))


class _Activity:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()

    def touch(self) -> None:
        self.last = self.loop.time()


async def _stream_to_socket(
    stream: MessageStream, writer: asyncio.StreamWriter, activity: _Activity
) -> None:
    while True:
        message = await stream.recv_message()
        activity.touch()
        if message is None:  # the stream ended without a half-close: treat as one
            break
        if message.data is not None:
            writer.write(message.data)
            await writer.drain()
        elif message.control is not None:
            code = message.control.code
            if code == TunnelControlCode.WRITE_CLOSED:
                break
            if code == TunnelControlCode.RESET:
                raise FlowResetError(message.control.message or "reset by peer")
    if writer.can_write_eof():
        writer.write_eof()


async def _socket_to_stream(
    reader: asyncio.StreamReader, stream: MessageStream, activity: _Activity
) -> None:
    while data := await reader.read(READ_SIZE):
        activity.touch()
        await stream.send_message(TunnelMessage(data=data))
    await stream.send_message(control(TunnelControlCode.WRITE_CLOSED))


async def _idle_watch(activity: _Activity, idle_timeout: float) -> None:
    while True:
        remaining = activity.last + idle_timeout - activity.loop.time()
        if remaining <= 0:
            raise TimeoutError(f"flow idle for {idle_timeout:.0f} s")
        await asyncio.sleep(remaining)


async def relay(
    stream: MessageStream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    idle_timeout: float,
) -> None:
    """Copy bytes both ways until both directions are closed (see the module docstring).

    Raises FlowResetError when the peer aborts, TimeoutError when idle, or the error that
    broke either side; always closes `writer`.
    """
    activity = _Activity()
    try:
        async with asyncio.TaskGroup() as group:
            watch = group.create_task(_idle_watch(activity, idle_timeout), name="idle-watch")
            directions = [
                group.create_task(_stream_to_socket(stream, writer, activity), name="to-socket"),
                group.create_task(_socket_to_stream(reader, stream, activity), name="to-stream"),
            ]
            await asyncio.gather(*directions)
            watch.cancel()
    except* Exception as group_error:  # noqa: BLE001 - re-raised below, first cause only
        # Report the first cause; the flow is over either way.
        raise group_error.exceptions[0] from None
    finally:
        writer.close()


def describe(error: BaseException) -> str:
    """A short reason for logs and RESET messages."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def send_connected(stream: Any) -> None:
    """Answer a dial: the far end is connected, bytes may flow."""
    await stream.send_message(control(TunnelControlCode.CONNECTED))


async def send_dial_failed(stream: Any, reason: str) -> None:
    """Answer a dial: the far end could not be reached, and why."""
    await stream.send_message(control(TunnelControlCode.DIAL_FAILED, reason))


async def send_reset(stream: Any, reason: str) -> None:
    """Best effort: tell the peer why the flow ends."""
    try:
        await stream.send_message(control(TunnelControlCode.RESET, reason))
    except (ConnectionError, OSError) as error:  # the stream is gone already
        log.debug("could not send reset: %s", describe(error))
