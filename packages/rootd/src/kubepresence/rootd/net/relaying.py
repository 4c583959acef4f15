"""Carrying the VIF's flows to the cluster: the `FlowRelay` the terminator calls.

Each TCP connection and each UDP flow to a routed address becomes one tunnel to the
manager (`Cluster.tunnel`: a Manager `DialCluster` stream over userd's splice in
production, an in-memory fake in tests):

* TCP: the SYN waits (`accept` returns None) while the tunnel opens and the far end dials
  the destination; CONNECTED lets the handshake complete (`Terminator.decide(flow, True)`),
  DIAL_FAILED, no answer, or a manager that cannot be reached refuses it (RST: the client
  sees "connection refused"). Then bytes go both ways, with half-close (`WRITE_CLOSED`
  one way is a FIN the other way) and resets (`RESET` <-> RST). Payload from the client
  is coalesced: a reader task drains the stream into a small bounded queue and the sender
  joins whatever is waiting into one message of up to `MESSAGE_SIZE` bytes, because the
  per-message cost of gRPC in Python dominates (notes/python-stack.md §9).
* UDP: the flow's first datagram opens the tunnel; datagrams wait in a bounded queue until
  the far end is CONNECTED, then each is one `data` message; answers go back to the client
  as datagrams. The endpoint's idle timeout ends the flow (WRITE_CLOSED to the far end).
* DNS to the cluster DNS address (UDP and TCP port 53) is answered locally by `DnsService`.

Every flow is a task in the relay's task group and catches its own failures: one broken
flow never ends another. Failures of the channel itself (the splice socket refuses, the
connection drops) are reported through `on_channel_error`, which has userd probed at once:
without userd there is no way to the manager, and the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from kubepresence.rootd.core.errors import LocalProtocolError
from kubepresence.rootd.core.flows import Address, FlowId
from kubepresence.rootd.core.packets import PROTO_TCP, PROTO_UDP
from kubepresence.rootd.net.streams import StreamResetError, TcpStream

log = logging.getLogger(__name__)

MESSAGE_SIZE = 256 * 1024  # the most payload one tunnel message carries
QUEUE_CHUNKS = 8  # client reads waiting for the tunnel, per TCP flow
DIAL_TIMEOUT = 8.0  # below the endpoint's admission timeout (10 s): we answer the SYN first
HANDSHAKE_TIMEOUT = 30.0  # from SYN-ACK to the client's ACK
CLOSE_TIMEOUT = 10.0  # both directions closed: the far end's end of stream, our last ACKs
UDP_QUEUE = 64  # datagrams held per UDP flow while its tunnel opens
DNS_PORT = 53
MAX_DNS_IN_FLIGHT = 4096  # queries answered at once; more are dropped (clients retry)


class TunnelEventKind(enum.Enum):
    CONNECTED = "connected"
    DIAL_FAILED = "dial-failed"
    DATA = "data"
    WRITE_CLOSED = "write-closed"
    RESET = "reset"
    KEEP_ALIVE = "keep-alive"
    END = "end"  # the far end finished the stream (no more events)


@dataclass(frozen=True, slots=True)
class TunnelEvent:
    kind: TunnelEventKind
    data: bytes = b""
    message: str = ""


class Tunnel(Protocol):
    """One flow's stream to the cluster, as the relay speaks it."""

    async def receive(self) -> TunnelEvent:
        """The next event; END once the far end finished (then END again forever)."""
        ...

    async def send_data(self, data: bytes) -> None: ...
    async def send_write_closed(self) -> None: ...
    async def send_reset(self, reason: str) -> None: ...

    async def end(self) -> None:
        """We send nothing more (after WRITE_CLOSED or RESET)."""
        ...


class Cluster(Protocol):
    """What the relay needs from userd."""

    def tunnel(self, flow: FlowId) -> AbstractAsyncContextManager[Tunnel]:
        """Open a tunnel for `flow` (its open message sent); closed (cancelled if
        unfinished) on exit. Raises ConnectionError/OSError when userd cannot be reached."""
        ...


class DatagramSender(Protocol):
    """The terminator, as the relay uses it."""

    def decide(self, flow: FlowId, accepted: bool) -> bool: ...
    def send_datagram(self, flow: FlowId, data: bytes) -> None: ...


class DnsHandler(Protocol):
    async def answer(self, query: bytes, *, udp: bool) -> bytes | None: ...
    async def serve_tcp(self, stream: TcpStream) -> None: ...


class FlowAbortedError(Exception):
    """A flow ended by a reset on either side; the other direction stops too."""


# -- one TCP connection --------------------------------------------------------------


async def relay_tcp(
    stream: TcpStream, tunnel: Tunnel, *, message_size: int = MESSAGE_SIZE
) -> str | None:
    """Copy bytes both ways with half-close until both directions are closed.

    Returns None after a clean close, or why the flow was reset (RST sent to whichever
    side did not reset it).
    """
    reason: str | None = None
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_client_to_cluster(stream, tunnel, message_size), name="tcp-up")
            group.create_task(_cluster_to_client(stream, tunnel), name="tcp-down")
    except* FlowAbortedError as aborted:
        reason = str(_first_leaf(aborted))
    except* (ConnectionError, OSError) as broken:
        stream.abort()  # the tunnel broke: the client must not take it for a clean end
        raise _first_leaf(broken) from None
    if reason is not None:
        stream.abort()
        with contextlib.suppress(ConnectionError, OSError):
            await tunnel.end()
        return reason
    # Both directions closed: every byte went through. We are done sending; let the far
    # end finish (it may already have, and reset the stream) and the client's last ACKs
    # arrive.
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await tunnel.end()
            while (await tunnel.receive()).kind != TunnelEventKind.END:
                pass
            await stream.wait_closed()
    return None


async def _client_to_cluster(stream: TcpStream, tunnel: Tunnel, message_size: int) -> None:
    chunks: deque[bytes] = deque()
    wake_sender = asyncio.Event()
    wake_reader = asyncio.Event()
    done: list[BaseException | None] = []  # [None] at end of stream, [error] on reset

    async def read() -> None:
        try:
            while True:
                while len(chunks) >= QUEUE_CHUNKS:
                    wake_reader.clear()
                    await wake_reader.wait()
                data = await stream.read(message_size)
                if not data:
                    done.append(None)
                    return
                chunks.append(data)
                wake_sender.set()
        except StreamResetError as error:
            done.append(error)
        finally:
            wake_sender.set()

    async with asyncio.TaskGroup() as group:
        group.create_task(read(), name="tcp-read")
        while True:
            while not chunks and not done:
                wake_sender.clear()
                await wake_sender.wait()
            if chunks:
                # Join what is waiting, up to one message: few large messages.
                parts = [chunks.popleft()]
                size = len(parts[0])
                while chunks and size + len(chunks[0]) <= message_size:
                    size += len(chunks[0])
                    parts.append(chunks.popleft())
                wake_reader.set()
                await tunnel.send_data(parts[0] if len(parts) == 1 else b"".join(parts))
                continue
            error = done[0]
            if error is None:
                await tunnel.send_write_closed()
                return
            await tunnel.send_reset(f"client reset: {error}")
            raise FlowAbortedError(f"client reset: {error}")


async def _cluster_to_client(stream: TcpStream, tunnel: Tunnel) -> None:
    while True:
        event = await tunnel.receive()
        kind = event.kind
        if kind == TunnelEventKind.DATA:
            try:
                await stream.write(event.data)
            except (StreamResetError, BrokenPipeError) as error:
                await tunnel.send_reset(f"client reset: {error}")
                raise FlowAbortedError(f"client reset: {error}") from None
        elif kind == TunnelEventKind.WRITE_CLOSED:
            stream.close()
            return
        elif kind == TunnelEventKind.RESET:
            raise FlowAbortedError(f"reset by the cluster side: {event.message or 'no reason'}")
        elif kind == TunnelEventKind.END:
            # The far end finished without closing its direction: bytes may be missing.
            raise FlowAbortedError(f"the tunnel ended early {event.message}".rstrip())
        # CONNECTED again or KEEP_ALIVE: nothing to do.


# -- the relay -----------------------------------------------------------------------


@dataclass(slots=True)
class _UdpFlow:
    flow: FlowId
    queue: asyncio.Queue[bytes | None]
    task: asyncio.Task[None] | None = None


class ClusterRelay:
    """The `FlowRelay` of a connected session (see the module docstring)."""

    def __init__(
        self,
        cluster: Cluster,
        tasks: asyncio.TaskGroup,
        dns: DnsHandler,
        dns_address: Address,
        terminator: DatagramSender,
        on_channel_error: Callable[[BaseException], None] = lambda error: None,
    ) -> None:
        self._cluster = cluster
        self._terminator = terminator
        self._tasks = tasks
        self._dns = dns
        self._dns_address = dns_address
        self._on_channel_error = on_channel_error
        self._awaiting: dict[FlowId, asyncio.Future[TcpStream]] = {}
        self._udp: dict[FlowId, _UdpFlow] = {}
        self._flow_tasks: set[asyncio.Task[Any]] = set()
        self._dns_in_flight = 0
        self.tcp_relayed = 0
        self.tcp_refused = 0
        self.udp_relayed = 0
        self.closed = False

    @property
    def open_flows(self) -> int:
        return len(self._flow_tasks)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = self._tasks.create_task(self._guard(work, name), name=name)
        self._flow_tasks.add(task)
        task.add_done_callback(self._flow_tasks.discard)

    async def _guard(self, work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except (ConnectionError, OSError) as error:
            log.info("%s: %s", name, error)
        except Exception:
            log.exception("%s failed", name)

    def close(self) -> None:
        """Cancel every flow (the session ends)."""
        self.closed = True
        for task in list(self._flow_tasks):
            task.cancel()

    def _is_dns(self, flow: FlowId) -> bool:
        return flow.destination == self._dns_address and flow.destination_port == DNS_PORT

    # -- FlowRelay -----------------------------------------------------------------------

    def accept(self, flow: FlowId) -> bool | None:
        if self.closed:
            return False
        if self._is_dns(flow):
            return True
        if flow.protocol == PROTO_TCP:
            self._spawn(self._tcp_flow(flow), str(flow))
            return None
        return flow.protocol == PROTO_UDP

    def tcp_connected(self, stream: TcpStream) -> None:
        if self._is_dns(stream.flow):
            self._spawn(self._dns.serve_tcp(stream), f"dns {stream.flow}")
            return
        waiting = self._awaiting.pop(stream.flow, None)
        if waiting is None or waiting.done():
            stream.abort()  # its tunnel is gone already
            return
        waiting.set_result(stream)

    def datagram(self, flow: FlowId, data: bytes) -> None:
        if self.closed:
            return
        if self._is_dns(flow):
            if self._dns_in_flight < MAX_DNS_IN_FLIGHT:
                self._dns_in_flight += 1
                self._spawn(self._dns_datagram(flow, data), f"dns {flow}")
            return
        state = self._udp.get(flow)
        if state is None:
            state = _UdpFlow(flow, asyncio.Queue(UDP_QUEUE))
            self._udp[flow] = state
            self._spawn(self._udp_flow(state), str(flow))
        if not state.queue.full():
            state.queue.put_nowait(data)

    def datagram_flow_closed(self, flow: FlowId) -> None:
        state = self._udp.pop(flow, None)
        if state is not None:
            with contextlib.suppress(asyncio.QueueFull):
                state.queue.put_nowait(None)

    # -- flows ---------------------------------------------------------------------------

    def _decide(self, flow: FlowId, accepted: bool) -> bool:
        return self._terminator.decide(flow, accepted)

    async def _tcp_flow(self, flow: FlowId) -> None:
        decided = False
        try:
            async with self._cluster.tunnel(flow) as tunnel:
                answer = await _first_answer(tunnel)
                if answer.kind != TunnelEventKind.CONNECTED:
                    log.info("%s refused: %s", flow, answer.message or answer.kind.value)
                    self.tcp_refused += 1
                    decided = True
                    self._decide(flow, False)
                    return
                waiting: asyncio.Future[TcpStream] = asyncio.get_running_loop().create_future()
                self._awaiting[flow] = waiting
                decided = True
                try:
                    if not self._decide(flow, True):
                        await tunnel.send_reset("the client gave up before the dial completed")
                        return
                    try:
                        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                            stream = await waiting
                    except TimeoutError:
                        await tunnel.send_reset("the client did not complete the handshake")
                        return
                finally:
                    self._awaiting.pop(flow, None)
                self.tcp_relayed += 1
                reason = await relay_tcp(stream, tunnel)
                if reason is not None:
                    log.debug("%s reset: %s", flow, reason)
        except (ConnectionError, OSError) as error:
            self._on_channel_error(error)
            raise
        finally:
            if not decided:
                self.tcp_refused += 1
                self._decide(flow, False)

    async def _udp_flow(self, state: _UdpFlow) -> None:
        flow = state.flow
        try:
            async with self._cluster.tunnel(flow) as tunnel:
                answer = await _first_answer(tunnel)
                if answer.kind != TunnelEventKind.CONNECTED:
                    log.info("%s: no flow: %s", flow, answer.message or answer.kind.value)
                    return
                self.udp_relayed += 1
                async with asyncio.TaskGroup() as group:
                    up = group.create_task(self._udp_up(state, tunnel), name="udp-up")
                    down = group.create_task(self._udp_down(flow, tunnel), name="udp-down")
                    await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
                    if up.done():
                        # The flow expired here: give the far end a moment to finish.
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(CLOSE_TIMEOUT):
                                await asyncio.shield(down)
                    up.cancel()
                    down.cancel()
        except (ConnectionError, OSError) as error:
            self._on_channel_error(error)
            raise
        finally:
            if self._udp.get(flow) is state:
                del self._udp[flow]

    async def _udp_up(self, state: _UdpFlow, tunnel: Tunnel) -> None:
        while (data := await state.queue.get()) is not None:
            await tunnel.send_data(data)
        await tunnel.send_write_closed()
        await tunnel.end()

    async def _udp_down(self, flow: FlowId, tunnel: Tunnel) -> None:
        while True:
            event = await tunnel.receive()
            if event.kind == TunnelEventKind.DATA:
                try:
                    self._terminator.send_datagram(flow, event.data)
                except LocalProtocolError:
                    return  # the flow expired on our side
            elif event.kind in (TunnelEventKind.END, TunnelEventKind.RESET):
                return

    async def _dns_datagram(self, flow: FlowId, query: bytes) -> None:
        try:
            reply = await self._dns.answer(query, udp=True)
        finally:
            self._dns_in_flight -= 1
        if reply is None:
            return
        with contextlib.suppress(LocalProtocolError):  # the client's flow is gone
            self._terminator.send_datagram(flow, reply)


def _first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


async def _first_answer(tunnel: Tunnel) -> TunnelEvent:
    """CONNECTED or why not: DIAL_FAILED, a reset, an early end, or no answer in time."""
    try:
        async with asyncio.timeout(DIAL_TIMEOUT):
            while True:
                event = await tunnel.receive()
                if event.kind != TunnelEventKind.KEEP_ALIVE:
                    return event
    except TimeoutError:
        return TunnelEvent(TunnelEventKind.DIAL_FAILED, message="no answer from the cluster")
