"""Terminating the TUN's traffic: the asyncio shell around `NetworkEndpoint`.

One `add_reader` callback drains a bounded batch of packets from the TUN into the
endpoint, hands the resulting events to the relay, then writes what the endpoint has to
send in bursts of at most `WRITE_BURST` packets, yielding to the loop between bursts so the
kernel->user queue is read before it overflows (notes/python-stack.md §9: writing a whole
window per callback dropped 100k ACKs). Timers are one `call_at` handle for the endpoint's
next deadline. Relays see each TCP connection as a `TcpStream` and each UDP flow as
datagram callbacks; see `FlowRelay`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from kubepresence.rootd.core.endpoint import (
    DatagramFlowExpired,
    DatagramReceived,
    EndpointConfig,
    Network,
    NetworkEndpoint,
)
from kubepresence.rootd.core.errors import LocalProtocolError
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import Chunk
from kubepresence.rootd.core.tcp import (
    Closed,
    Connected,
    DataReceived,
    PeerClosed,
    Reset,
    SendSpace,
)
from kubepresence.rootd.net.streams import TcpStream
from kubepresence.rootd.net.tun import TunDevice, TunError

log = logging.getLogger(__name__)

READ_BATCH = 256
WRITE_BURST = 64


class FlowRelay(Protocol):
    """What the terminator asks of the code that carries flows to the cluster.

    All four are plain callbacks on the event loop thread: they must not block. A relay
    that needs to await (open a gRPC stream, say) starts a task in its own task group.
    """

    def accept(self, flow: FlowId) -> bool | None:
        """A SYN, or the first datagram, for `flow`: True to take it, False to refuse
        (RST for TCP, ICMP port unreachable for UDP), None to decide later: for TCP, call
        `Terminator.decide` once the cluster side answered (the SYN waits, up to the
        endpoint's admission timeout); for UDP, None drops the datagram."""
        ...

    def tcp_connected(self, stream: TcpStream) -> None:
        """The handshake of an accepted connection completed: relay `stream` from now on."""
        ...

    def datagram(self, flow: FlowId, data: bytes) -> None:
        """A datagram on an accepted UDP flow; answer with `Terminator.send_datagram`."""
        ...

    def datagram_flow_closed(self, flow: FlowId) -> None:
        """The UDP flow was idle too long and is gone."""
        ...


class _Unstarted:
    """The relay of a terminator not started yet: nothing is read then, so nothing asks."""

    def accept(self, flow: FlowId) -> bool | None:
        return False

    def tcp_connected(self, stream: TcpStream) -> None:
        stream.abort()

    def datagram(self, flow: FlowId, data: bytes) -> None:
        pass

    def datagram_flow_closed(self, flow: FlowId) -> None:
        pass


class Terminator:
    """Runs a `NetworkEndpoint` for the `routed` subnets on a `TunDevice` inside the
    running event loop, handing its flows to the relay given to `start`.

    The wiring goes one way: build the terminator, build the relay with it (the relay
    answers deferred SYNs and sends datagrams through `decide` and `send_datagram`), then
    `start(relay)`.
    """

    def __init__(
        self,
        device: TunDevice,
        routed: Iterable[Network],
        config: EndpointConfig | None = None,
        *,
        initial_sequence: Callable[[], int] | None = None,
    ) -> None:
        self.device = device
        self._relay: FlowRelay = _Unstarted()
        self.endpoint = NetworkEndpoint(
            routed, self._accept, config, initial_sequence=initial_sequence
        )
        self._streams: dict[FlowId, TcpStream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self.packets_read = 0
        self.packets_written = 0
        self.largest_read = 0  # above the MTU means the kernel hands us GSO super-segments
        self.error: TunError | None = None
        self.stopped = asyncio.Event()

    def start(self, relay: FlowRelay) -> None:
        """Begin reading the TUN on the running loop; `relay` takes the flows."""
        self._relay = relay
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.device.fd, self._on_readable)

    def stop(self) -> None:
        """Stop reading and timing; reset every open stream. The device stays open.

        Also called when the device fails (`error` says why); owners wait on `stopped`.
        """
        self.stopped.set()
        loop = self._loop
        if loop is None:
            return
        loop.remove_reader(self.device.fd)
        for handle in (self._flush_handle, self._timer):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._timer = None
        for stream in list(self._streams.values()):
            stream.finish("terminator stopped")
        self._streams.clear()
        self._loop = None

    def _accept(self, flow: FlowId) -> bool | None:
        return self._relay.accept(flow)

    # -- the loop ------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_readable(self) -> None:
        try:
            packets = self.device.read_batch(READ_BATCH)
        except TunError as error:
            log.error("TUN device failed, stopping: %s", error)
            self.error = error
            self.stop()
            return
        if not packets:
            return
        now = self._now()
        receive = self.endpoint.receive
        for packet in packets:
            receive(packet, now)
        self.packets_read += len(packets)
        self.largest_read = max(self.largest_read, max(map(len, packets)))
        self._dispatch()
        self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        if self._loop is None:
            return
        packets = self.endpoint.flush(self._now(), WRITE_BURST)
        write = self.device.write
        for packet in packets:
            write(packet)
        self.packets_written += len(packets)
        if self.endpoint.has_output:
            # More to write: yield so the reader drains the TUN queue first.
            self._flush_handle = self._loop.call_soon(self._flush)
        self._dispatch()
        self._rearm_timer()

    def _kick(self) -> None:
        """The relay changed something: write what follows from it soon (once)."""
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _rearm_timer(self) -> None:
        deadline = self.endpoint.next_deadline()
        if deadline == self._timer_deadline or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        self.endpoint.on_timer(self._now())
        self._dispatch()
        self._flush()

    def _dispatch(self) -> None:
        events = self.endpoint.take_events()
        if not events:
            return
        streams = self._streams
        for event in events:
            if isinstance(event, DataReceived):
                stream = streams.get(event.flow)
                if stream is not None:
                    stream.feed(event.data)
            elif isinstance(event, SendSpace):
                stream = streams.get(event.flow)
                if stream is not None:
                    stream.wake_writer()
            elif isinstance(event, Connected):
                stream = TcpStream(event.flow, self)
                streams[event.flow] = stream
                self._call_relay(self._relay.tcp_connected, stream)
            elif isinstance(event, PeerClosed):
                stream = streams.get(event.flow)
                if stream is not None:
                    stream.feed_eof()
            elif isinstance(event, Closed | Reset):
                stream = streams.pop(event.flow, None)
                if stream is not None:
                    stream.finish(event.reason if isinstance(event, Reset) else None)
            elif isinstance(event, DatagramReceived):
                self._call_relay(self._relay.datagram, event.flow, event.data)
            elif isinstance(event, DatagramFlowExpired):
                self._call_relay(self._relay.datagram_flow_closed, event.flow)

    def _call_relay(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            # A relay bug must not stop the packet loop for every other flow.
            log.exception("flow relay failed on %s", args[0])

    # -- what streams and relays call ----------------------------------------------------

    def stream_send(self, flow: FlowId, data: Chunk) -> int:
        taken = self.endpoint.send(flow, data)
        self._kick()
        return taken

    def stream_consumed(self, flow: FlowId, count: int) -> None:
        try:
            self.endpoint.consumed(flow, count)
        except LocalProtocolError:
            return  # the connection ended while the relay held the bytes
        self._kick()

    def stream_close(self, flow: FlowId) -> None:
        self.endpoint.close(flow)
        self._kick()

    def stream_abort(self, flow: FlowId) -> None:
        self.endpoint.abort(flow)
        self._dispatch()
        self._kick()

    def decide(self, flow: FlowId, accepted: bool) -> bool:
        """Answer a deferred SYN (SYN-ACK or RST); False if it already timed out or the
        terminator stopped (a dial cancelled at disconnect answers after the stop)."""
        if self._loop is None:
            return False
        pending = self.endpoint.decide(flow, accepted, self._now())
        self._kick()
        return pending

    def send_datagram(self, flow: FlowId, data: Chunk) -> None:
        """Send a UDP datagram back to the client of `flow` (LocalProtocolError if gone)."""
        self.endpoint.send_datagram(flow, data)
        self._kick()
