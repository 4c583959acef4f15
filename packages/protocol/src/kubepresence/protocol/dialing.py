"""The far end of a client's flow: dial its destination, answer, relay.

The manager does this for the flows it dials itself, and a traffic agent for the flows
that leave the cluster from its pod (`--proxy-via`). `dial` connects (TCP within the dial
timeout; a UDP socket is connected at once) and answers the tunnel CONNECTED, or
DIAL_FAILED with the reason; `DialledFlow.relay` then carries the flow to its end with the
tunnel relay (TCP: half-close, idle timeout, reset) or the datagram relay (UDP). A failure
of the relay ends this one flow, with a RESET to the peer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from kubepresence.protocol import datagrams
from kubepresence.protocol.tunnel import (
    MessageStream,
    describe,
    relay,
    send_connected,
    send_dial_failed,
    send_reset,
)

log = logging.getLogger(__name__)


@dataclass
class DialledFlow:
    """A destination that answered: a TCP connection or a connected UDP socket."""

    host: str
    port: int
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    datagram: tuple[asyncio.DatagramTransport, datagrams.Answers] | None = None

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
        if self.datagram is not None:
            self.datagram[0].close()

    async def relay(self, stream: MessageStream, *, idle_timeout: float) -> None:
        """Carry the flow until it ends (see the module docstring); never raises for
        the flow's own failures."""
        what = "udp flow" if self.datagram is not None else "flow"
        try:
            if self.datagram is not None:
                transport, answers = self.datagram
                await datagrams.relay_datagrams(
                    stream, transport, answers, idle_timeout=idle_timeout
                )
            elif self.streams is not None:
                reader, writer = self.streams
                await relay(stream, reader, writer, idle_timeout=idle_timeout)
        except Exception as error:  # noqa: BLE001 - any failure ends this one flow only
            log.info("%s to %s:%d ended: %s", what, self.host, self.port, describe(error))
            await send_reset(stream, describe(error))
        else:
            log.debug("%s to %s:%d closed", what, self.host, self.port)
        finally:
            self.close()


async def dial(
    stream: MessageStream, host: str, port: int, *, udp: bool, dial_timeout: float
) -> DialledFlow | None:
    """Connect to the destination and tell the peer: the flow, or None when it failed."""
    try:
        async with asyncio.timeout(dial_timeout):
            if udp:
                flow = DialledFlow(
                    host, port, datagram=await datagrams.open_datagram_flow(host, port)
                )
            else:
                flow = DialledFlow(host, port, streams=await asyncio.open_connection(host, port))
    except (OSError, TimeoutError) as error:
        log.info("dial %s:%d failed: %s", host, port, describe(error))
        await send_dial_failed(stream, describe(error))
        return None
    log.debug("flow to %s:%d open", host, port)
    try:
        await send_connected(stream)
    except BaseException:
        flow.close()
        raise
    return flow
