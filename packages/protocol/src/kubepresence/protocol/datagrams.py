"""Relaying a UDP flow: each tunnel `data` message is one datagram, both ways.

Whoever dials a client's UDP destination uses it: the manager (its own flows) and a
traffic agent (flows that leave the cluster from its pod, `--proxy-via`). The destination
socket is connected, so only its answers come back. The flow ends when
the client closes its side, resets, or nothing moved for the idle timeout.
"""

from __future__ import annotations

import asyncio
import logging

from kubepresence.protocol.gen.common import TunnelControlCode, TunnelMessage
from kubepresence.protocol.tunnel import FlowResetError, MessageStream

log = logging.getLogger(__name__)

# Answers waiting for the stream; beyond this a slow client loses datagrams, as UDP may.
QUEUE_LIMIT = 256


class Answers(asyncio.DatagramProtocol):
    """The destination's answers, queued for the stream."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue(QUEUE_LIMIT)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.queue.full():
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: UDP has no connection to break; note and go on.
        log.debug("datagram flow error: %s", exc)


async def open_datagram_flow(host: str, port: int) -> tuple[asyncio.DatagramTransport, Answers]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Answers, remote_addr=(host, port))
    return transport, protocol


async def relay_datagrams(
    stream: MessageStream,
    transport: asyncio.DatagramTransport,
    answers: Answers,
    *,
    idle_timeout: float,
) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()

    async def to_destination() -> None:
        nonlocal last
        while (message := await stream.recv_message()) is not None:
            last = loop.time()
            if message.data is not None:
                transport.sendto(message.data)
            elif message.control is not None:
                if message.control.code == TunnelControlCode.RESET:
                    raise FlowResetError(message.control.message or "reset by peer")
                if message.control.code == TunnelControlCode.WRITE_CLOSED:
                    return

    async def to_client() -> None:
        nonlocal last
        while True:
            item = await answers.queue.get()
            if isinstance(item, Exception):
                raise item
            last = loop.time()
            await stream.send_message(TunnelMessage(data=item))

    async def idle_watch() -> None:
        while (remaining := last + idle_timeout - loop.time()) > 0:  # noqa: ASYNC110 - a timer
            await asyncio.sleep(remaining)

    try:
        async with asyncio.TaskGroup() as group:
            up = group.create_task(to_destination(), name="udp-up")
            down = group.create_task(to_client(), name="udp-down")
            idle = group.create_task(idle_watch(), name="udp-idle")
            await asyncio.wait({up, idle}, return_when=asyncio.FIRST_COMPLETED)
            for task in (up, down, idle):
                task.cancel()
    except* Exception as failed:  # noqa: BLE001 - the first cause is the flow's end
        raise failed.exceptions[0] from None
    finally:
        transport.close()
