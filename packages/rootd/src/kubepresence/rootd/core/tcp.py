"""A userspace TCP endpoint for one connection, sans-IO.

Theory of operation
-------------------
A `TcpConnection` is one end of one TCP connection, driven entirely by its owner:

* `receive(segment, now)` hands it a parsed segment from the peer;
* `send(data)`, `consumed(n)`, `close()` and `abort()` are the application side;
* `on_timer(now)` runs the timers once `now` has reached `deadline`;
* `produce(now, out, budget)` appends the packets to write (a list of buffers each) and says
  whether more is waiting. Nothing is written from `receive`: the owner reads a batch of
  packets, then produces once, so one ACK covers the whole batch (ACK coalescing) and rides
  on outgoing data when there is any.

Events for the application (`Connected`, `DataReceived`, `PeerClosed`, `SendSpace`, and
exactly one terminal `Closed` or `Reset`) go to the `emit` callable the owner passed in.
Time is only ever the `now` the owner passes; there is no clock, socket or await here.

Sequence numbers are kept as unbounded integers ("absolute"): ours start at the ISS, the
peer's at its ISN, and a 32-bit number from the wire is mapped to the absolute value
nearest to a reference point. Comparisons are then plain `<`, with no modular traps.

The state follows RFC 9293. Changes driven by the handshake, FINs and timers go through the
explicit `_TRANSITIONS` table; resets go straight to CLOSED from any state. A peer that breaks
the rules is answered the TCP way (drop, ACK or RST) and never raises; the owner calling an
operation the state does not allow raises `LocalProtocolError`.

Sending: `send` appends the caller's buffers (no copy for `bytes`; small writes are staged
and joined) to a queue that starts at the oldest unacknowledged byte; a cursor marks
`snd_nxt`. Segments are memoryview slices of that queue, up to the MSS, or up to 64 KiB
when the owner's writer emits GSO super-segments. Only the peer's window limits sending:
there is no congestion control, because the peer is the local kernel across a TUN device,
not a network. Loss recovery is go-back-N: on a retransmission timeout, or three duplicate
ACKs, the cursor rewinds to `snd_una` and everything from there is sent again as the
window allows. On a TUN device the only losses are queue overflows, where this converges
quickly and needs no SACK scoreboard. The RTO follows RFC 6298 (Karn's rule, exponential
backoff, a bounded number of retries without any acceptable ACK); a zero window is probed
with the persist timer (an ACK one below `snd_una`, which makes the peer repeat its window).

Receiving: in-order payload goes to the application as `DataReceived` at once; the
advertised window is the receive buffer minus what the application has not yet `consumed`.
Out-of-order segments inside the window are kept (bounded in count and bytes) and
delivered when the gap fills. The next in-order segment of a busy connection takes a short
"header prediction" path that a property test holds equal to the general one. Pure ACKs
carry `seq = snd_max`, which is FIN + 1 once our FIN has gone: a peer in LAST-ACK drops an
ACK whose seq is below what it has received, and would retransmit its FIN forever.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubepresence.rootd.core.errors import LocalProtocolError
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    URG,
    Chunk,
    TcpSegment,
    tcp_syn_options,
)

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
_DEFAULT_PEER_MSS = 536
_MAX_WINDOW_SCALE = 14
_MAX_OUT_OF_ORDER_SEGMENTS = 256
_SMALL_SEND = 4096
_DUPLICATE_ACK_THRESHOLD = 3
# The largest TCP payload of one GSO super-segment: IPv4 total length is 16 bits.
GSO_MAX_PAYLOAD = 65535 - 60 - 20


class State(enum.Enum):
    """RFC 9293 connection states (LISTEN is the endpoint's table, not a connection)."""

    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"
    CLOSED = "CLOSED"


class Trigger(enum.Enum):
    HANDSHAKE_DONE = "handshake done"
    LOCAL_CLOSE = "local close"
    PEER_FIN = "peer FIN"
    FIN_ACKED = "our FIN acknowledged"
    TIME_WAIT_OVER = "TIME-WAIT over"


_TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.SYN_SENT, Trigger.HANDSHAKE_DONE): State.ESTABLISHED,
    (State.SYN_RECEIVED, Trigger.HANDSHAKE_DONE): State.ESTABLISHED,
    (State.ESTABLISHED, Trigger.LOCAL_CLOSE): State.FIN_WAIT_1,
    (State.ESTABLISHED, Trigger.PEER_FIN): State.CLOSE_WAIT,
    (State.FIN_WAIT_1, Trigger.FIN_ACKED): State.FIN_WAIT_2,
    (State.FIN_WAIT_1, Trigger.PEER_FIN): State.CLOSING,
    (State.FIN_WAIT_2, Trigger.PEER_FIN): State.TIME_WAIT,
    (State.CLOSING, Trigger.FIN_ACKED): State.TIME_WAIT,
    (State.CLOSE_WAIT, Trigger.LOCAL_CLOSE): State.LAST_ACK,
    (State.LAST_ACK, Trigger.FIN_ACKED): State.CLOSED,
    (State.TIME_WAIT, Trigger.TIME_WAIT_OVER): State.CLOSED,
}

_SYNCHRONIZED = frozenset(State) - {State.SYN_SENT, State.SYN_RECEIVED, State.CLOSED}
_RECEIVES_DATA = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})
_SENDS_DATA = frozenset({State.SYN_SENT, State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT})
_FIN_QUEUED = frozenset({State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK})
# Flags that rule out header prediction (PSH and ECN bits do not matter to it).
_UNPREDICTED_FLAGS = ACK | FIN | RST | SYN | URG


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Limits and timers of a connection.

    `mss`: the largest payload per segment we accept (TUN MTU minus IP and TCP headers); the
    send MSS is the smaller of this and the peer's. `gso`: send payloads up to
    `GSO_MAX_PAYLOAD` as one super-segment (the writer marks it for the kernel to split).
    """

    mss: int = 1460
    receive_buffer: int = 1 << 20
    send_buffer: int = 1 << 20
    gso: bool = False
    initial_rto: float = 1.0
    min_rto: float = 0.2
    max_rto: float = 60.0
    max_retransmissions: int = 8
    max_syn_retransmissions: int = 5
    time_wait: float = 1.0

    def __post_init__(self) -> None:
        if not 64 <= self.mss <= 65495:
            raise ValueError(f"mss {self.mss} out of range")
        if self.receive_buffer < 1 or self.send_buffer < 1:
            raise ValueError("buffers must hold at least one byte")
        if self.receive_buffer > 65535 << _MAX_WINDOW_SCALE:
            raise ValueError("receive buffer beyond the largest scaled window")


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake completed; data may flow."""

    flow: FlowId


@dataclass(frozen=True, slots=True)
class DataReceived:
    """In-order bytes from the peer. Call `consumed(len(data))` once they are passed on."""

    flow: FlowId
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer sent FIN: no more data will come; we may still send."""

    flow: FlowId


@dataclass(frozen=True, slots=True)
class SendSpace:
    """The send buffer, full at a `send`, has drained below half: send more."""

    flow: FlowId


@dataclass(frozen=True, slots=True)
class Closed:
    """Terminal: both directions closed and acknowledged (or our FIN in TIME-WAIT)."""

    flow: FlowId


@dataclass(frozen=True, slots=True)
class Reset:
    """Terminal: the connection ended abnormally; `reason` says how."""

    flow: FlowId
    reason: str


TcpEvent = Connected | DataReceived | PeerClosed | SendSpace | Closed | Reset

SegmentBuilder = Callable[..., list[Chunk]]
"""`PacketWriter.tcp` bound to the connection's ports:
`(seq, ack, flags, window, payload=(), options=b"", mss=0) -> packet`."""


def _window_scale_for(buffer: int) -> int:
    shift = 0
    while (buffer >> shift) > 65535 and shift < _MAX_WINDOW_SCALE:
        shift += 1
    return shift


class TcpConnection:
    """One end of one TCP connection; see the module docstring for how to drive it."""

    def __init__(
        self,
        flow: FlowId,
        build: SegmentBuilder,
        emit: Callable[[TcpEvent], None],
        config: TcpConfig,
        iss: int,
    ) -> None:
        self.flow = flow
        self.state = State.CLOSED
        self._build = build
        self._emit = emit
        self._config = config
        self._opened = False
        self._ended = False

        self.iss = iss & _MASK
        self.snd_una = self.iss
        self.snd_nxt = self.iss
        self.snd_max = self.iss
        self.snd_wnd = 0
        self._snd_wl1 = 0
        self._snd_wl2 = 0
        self._snd_shift = 0
        self._peer_mss = _DEFAULT_PEER_MSS
        self.send_mss = min(config.mss, _DEFAULT_PEER_MSS)
        self._fin_seq: int | None = None

        # Send queue: chunks from the oldest unacknowledged data byte (`_queue_seq`) on.
        self._chunks: list[memoryview] = []
        self._head = 0
        self._head_offset = 0
        self._cursor_index = 0
        self._cursor_offset = 0
        self._queue_seq = self.iss + 1
        self._queued = 0
        self._staging = bytearray()
        self._send_blocked = False

        self.irs = 0
        self.rcv_nxt = 0
        self._rcv_shift = 0
        self._unconsumed = 0
        self._advertised_edge = 0
        self._out_of_order: dict[int, bytes] = {}
        self._out_of_order_bytes = 0
        self._peer_fin_seq: int | None = None
        self._syn_options = b""

        self._ack_pending = False
        self._probe_pending = False
        self._rst_pending = False
        self._reset_reply_seq: int | None = None
        self._duplicate_acks = 0
        self._recovery_point = 0

        self.rto = config.initial_rto
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rtt_seq: int | None = None
        self._rtt_start = 0.0
        self._retransmissions = 0
        self._rto_deadline: float | None = None
        self._persist_deadline: float | None = None
        self._persist_backoff = 0
        self._time_wait_deadline: float | None = None

    # -- opening -------------------------------------------------------------------------

    def open_passive(self, syn: TcpSegment, now: float) -> None:
        """Answer the peer's SYN with a SYN-ACK (the endpoint accepted the connection)."""
        self._require_unopened()
        if not syn.flags & SYN or syn.flags & (ACK | RST):
            raise LocalProtocolError(f"open_passive needs a plain SYN, got {syn!r}")
        self._opened = True
        self.state = State.SYN_RECEIVED
        self.irs = syn.seq
        self.rcv_nxt = syn.seq + 1
        self._take_peer_options(syn)
        self.snd_wnd = syn.window
        self._syn_options = tcp_syn_options(
            self._config.mss, self._rcv_shift if syn.window_scale is not None else None
        )
        self._arm_rto(now)

    def open_active(self, now: float) -> None:
        """Send a SYN (used by tests as a reference peer, and for outbound dials)."""
        self._require_unopened()
        self._opened = True
        self.state = State.SYN_SENT
        self._rcv_shift = _window_scale_for(self._config.receive_buffer)
        self._syn_options = tcp_syn_options(self._config.mss, self._rcv_shift)
        self._arm_rto(now)

    def _require_unopened(self) -> None:
        if self._opened:
            raise LocalProtocolError("connection already opened")

    def _take_peer_options(self, syn: TcpSegment) -> None:
        if syn.mss:
            self._peer_mss = syn.mss
        self.send_mss = max(1, min(self._config.mss, self._peer_mss))
        # Window scaling is on only if both SYNs carry the option (RFC 7323 §2.2); we always
        # offer it, so the peer's SYN decides.
        if syn.window_scale is not None:
            self._snd_shift = min(syn.window_scale, _MAX_WINDOW_SCALE)
            self._rcv_shift = _window_scale_for(self._config.receive_buffer)
        else:
            self._snd_shift = 0
            self._rcv_shift = 0

    # -- application side ----------------------------------------------------------------

    @property
    def send_space(self) -> int:
        """Bytes `send` will accept now."""
        if self.state not in _SENDS_DATA or self._fin_seq is not None:
            return 0
        return max(0, self._config.send_buffer - self._queued)

    @property
    def receive_window(self) -> int:
        """Bytes the peer may send beyond `rcv_nxt` (receive buffer minus unconsumed)."""
        return max(0, self._config.receive_buffer - self._unconsumed)

    @property
    def unconsumed(self) -> int:
        """Bytes delivered as `DataReceived` that the application has not `consumed` yet."""
        return self._unconsumed

    def send(self, data: Chunk) -> int:
        """Queue bytes for the peer; returns how many were taken (the rest: wait for
        `SendSpace`). `bytes` are kept by reference; mutable buffers are copied."""
        if self.state not in _SENDS_DATA or self._fin_seq is not None:
            raise LocalProtocolError(f"send in state {self.state.value} or after close")
        room = self._config.send_buffer - self._queued
        taken = min(len(data), max(0, room))
        if taken < len(data):
            self._send_blocked = True
        if not taken:
            return 0
        if len(data) < _SMALL_SEND:
            self._staging += data[:taken]
        else:
            self._seal_staging()
            view = memoryview(data if isinstance(data, bytes) else bytes(data))
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast("B")
            self._chunks.append(view[:taken] if taken < len(view) else view)
        self._queued += taken
        return taken

    def consumed(self, count: int) -> None:
        """The application passed on `count` received bytes: reopen the window."""
        if count < 0 or count > self._unconsumed:
            raise LocalProtocolError(f"consumed {count} of {self._unconsumed} delivered bytes")
        before = self._advertised_edge - self.rcv_nxt
        self._unconsumed -= count
        opened = self.receive_window - max(0, before)
        if self.state in _SYNCHRONIZED and opened >= min(
            self._config.receive_buffer // 2, 4 * self._config.mss
        ):
            self._ack_pending = True

    def close(self) -> None:
        """Half-close: send FIN after the queued data. Receiving goes on until the peer's FIN."""
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED):
            if self._fin_seq is not None:
                raise LocalProtocolError("close called twice")
            # The FIN goes out once the handshake completes (see _handshake_done).
            self._fin_seq = self._queue_seq + self._queued
            return
        if (self.state, Trigger.LOCAL_CLOSE) not in _TRANSITIONS:
            raise LocalProtocolError(f"close in state {self.state.value}")
        self._fin_seq = self._queue_seq + self._queued
        self._fire(Trigger.LOCAL_CLOSE)

    def abort(self) -> None:
        """Reset the connection now (RST to the peer); emits `Reset('aborted')`."""
        if self.state is State.CLOSED:
            return
        if self.state not in (State.SYN_SENT, State.TIME_WAIT):
            self._rst_pending = True
        self._terminate(Reset(self.flow, "aborted"))

    # -- timers --------------------------------------------------------------------------

    @property
    def deadline(self) -> float | None:
        """When `on_timer` must run next, or None."""
        best = self._rto_deadline
        persist = self._persist_deadline
        if persist is not None and (best is None or persist < best):
            best = persist
        time_wait = self._time_wait_deadline
        if time_wait is not None and (best is None or time_wait < best):
            best = time_wait
        return best

    def on_timer(self, now: float) -> None:
        """Run whichever timers have expired by `now`."""
        if self._time_wait_deadline is not None and now >= self._time_wait_deadline:
            self._time_wait_deadline = None
            self._fire(Trigger.TIME_WAIT_OVER)
            return
        if self._rto_deadline is not None and now >= self._rto_deadline:
            self._retransmission_timeout(now)
        if self._persist_deadline is not None and now >= self._persist_deadline:
            self._probe_pending = True
            self._persist_backoff = min(self._persist_backoff + 1, 10)
            self._persist_deadline = now + min(
                self.rto * (1 << self._persist_backoff), self._config.max_rto
            )

    def _arm_rto(self, now: float) -> None:
        self._rto_deadline = now + self.rto

    def _retransmission_timeout(self, now: float) -> None:
        if self.snd_max == self.snd_una and self.state not in (
            State.SYN_SENT,
            State.SYN_RECEIVED,
        ):
            self._rto_deadline = None
            return
        self._retransmissions += 1
        limit = (
            self._config.max_syn_retransmissions
            if self.state in (State.SYN_SENT, State.SYN_RECEIVED)
            else self._config.max_retransmissions
        )
        if self._retransmissions > limit:
            self._rst_pending = self.state is not State.SYN_SENT
            self._terminate(Reset(self.flow, "retransmission timeout"))
            return
        self.rto = min(self.rto * 2, self._config.max_rto)
        self._rewind()
        if self.state in _SYNCHRONIZED and self.snd_wnd == 0:
            # The window closed under data in flight: nothing may be resent, so elicit the
            # peer's current window instead.
            self._probe_pending = True
        self._rto_deadline = now + self.rto

    def _rewind(self) -> None:
        """Go back to the oldest unacknowledged byte (Karn: no RTT sample across it)."""
        self._rtt_seq = None
        self._recovery_point = self.snd_max
        self.snd_nxt = self.snd_una
        if self.snd_una >= self._queue_seq:
            self._cursor_index = self._head
            self._cursor_offset = self._head_offset

    # -- receiving -----------------------------------------------------------------------

    def _peer_seq(self, wire: int) -> int:
        base = self.rcv_nxt
        return base + ((wire - base + _HALF) & _MASK) - _HALF

    def _our_seq(self, wire: int) -> int:
        base = self.snd_una
        return base + ((wire - base + _HALF) & _MASK) - _HALF

    def receive(self, segment: TcpSegment, now: float) -> None:
        """Process a segment from the peer (RFC 9293 §3.10.7, "SEGMENT ARRIVES")."""
        state = self.state
        if state is State.ESTABLISHED and self._receive_predicted(segment, now):
            return
        if state is State.CLOSED:
            return
        if state is State.SYN_SENT:
            self._receive_in_syn_sent(segment, now)
            return
        flags = segment.flags
        seq = self._peer_seq(segment.seq)
        payload = segment.payload
        length = len(payload) + (flags & SYN and 1) + (flags & FIN and 1)
        window = max(self._advertised_edge, self.rcv_nxt + self.receive_window) - self.rcv_nxt

        if flags & RST:
            # RFC 5961: only a RST in the window is believed.
            if self.rcv_nxt <= seq < self.rcv_nxt + max(window, 1):
                self._terminate(Reset(self.flow, "reset by peer"))
            return
        if flags & SYN:
            if state is State.SYN_RECEIVED and seq == self.rcv_nxt - 1:
                self._rewind()  # our SYN-ACK was lost: send it again
            else:
                self._ack_pending = True  # challenge ACK (RFC 5961 §4)
            return
        if not self._acceptable(seq, length, window):
            self._ack_pending = True
            return
        if not flags & ACK:
            return
        if not self._process_ack(segment, seq, len(payload), now):
            return
        if self.state is State.CLOSED:
            return
        if payload:
            if self.state in _RECEIVES_DATA:
                self._accept_data(seq, payload)
            self._ack_pending = True
        if flags & FIN and self.state in _RECEIVES_DATA:
            self._peer_fin_seq = seq + len(payload)
            self._ack_pending = True
        fin_seq = self._peer_fin_seq
        if fin_seq is not None and fin_seq <= self.rcv_nxt:
            if fin_seq == self.rcv_nxt and self.state in _RECEIVES_DATA:
                self._accept_peer_fin(now)
            else:
                self._peer_fin_seq = None  # the peer sent data past its own FIN

    def _receive_predicted(self, segment: TcpSegment, now: float) -> bool:
        """Header prediction (after Van Jacobson): the next in-order segment of a busy
        connection, handled in one short path. False means "take the general path"; the
        outcome is the same either way, only cheaper here."""
        if segment.flags & _UNPREDICTED_FLAGS != ACK or self._out_of_order:
            return False
        rcv_nxt = self.rcv_nxt
        if segment.seq != rcv_nxt & _MASK or self._peer_fin_seq is not None:
            return False
        snd_una = self.snd_una
        ack = snd_una + ((segment.ack - snd_una + _HALF) & _MASK) - _HALF
        payload = segment.payload
        length = len(payload)
        if (
            ack < snd_una
            or ack > self.snd_max
            or (length == 0 and ack == snd_una)
            or length > self._config.receive_buffer - self._unconsumed
        ):
            return False
        self._retransmissions = 0
        if rcv_nxt > self._snd_wl1 or (rcv_nxt == self._snd_wl1 and ack >= self._snd_wl2):
            window = segment.window << self._snd_shift
            self.snd_wnd = window
            self._snd_wl1 = rcv_nxt
            self._snd_wl2 = ack
            if window:
                self._persist_deadline = None
                self._persist_backoff = 0
        if ack > snd_una:
            self._on_acked(ack, now)
        if length:
            self._deliver(bytes(payload))
            self._ack_pending = True
        return True

    def _acceptable(self, seq: int, length: int, window: int) -> bool:
        rcv_nxt = self.rcv_nxt
        if length == 0:
            return seq == rcv_nxt or rcv_nxt <= seq < rcv_nxt + window
        if window == 0:
            return False
        end = seq + length - 1
        return rcv_nxt <= seq < rcv_nxt + window or rcv_nxt <= end < rcv_nxt + window

    def _process_ack(self, segment: TcpSegment, seq: int, payload_length: int, now: float) -> bool:
        """Handle the ACK field; False if the rest of the segment must be dropped."""
        ack = self._our_seq(segment.ack)
        if self.state is State.SYN_RECEIVED:
            if ack != self.iss + 1:
                self._send_reset_for(segment)
                return False
            self._on_acked(ack, now)
            self.snd_wnd = segment.window << self._snd_shift
            self._snd_wl1, self._snd_wl2 = seq, ack
            self._handshake_done()
            return True
        if ack > self.snd_max:
            self._ack_pending = True  # acknowledges something never sent
            return False
        if ack < self.snd_una:
            return True  # an old duplicate: its data may still be news
        # Any acceptable ACK proves the peer alive: only silence counts toward giving up.
        self._retransmissions = 0
        window = segment.window << self._snd_shift
        window_changed = False
        if seq > self._snd_wl1 or (seq == self._snd_wl1 and ack >= self._snd_wl2):
            window_changed = window != self.snd_wnd
            self.snd_wnd = window
            self._snd_wl1, self._snd_wl2 = seq, ack
            if window:
                self._persist_deadline = None
                self._persist_backoff = 0
        if ack > self.snd_una:
            self._on_acked(ack, now)
        elif (
            payload_length == 0
            and not segment.flags & FIN
            and not window_changed
            and self.snd_max > self.snd_una
        ):
            self._duplicate_acks += 1
            if (
                self._duplicate_acks == _DUPLICATE_ACK_THRESHOLD
                and self.snd_una >= self._recovery_point
            ):
                self._rewind()  # fast retransmit
        if (
            self._fin_seq is not None
            and self.state in _FIN_QUEUED
            and ack == self._fin_seq + 1
            and self.snd_max == ack
        ):
            self._fire(Trigger.FIN_ACKED)
            if self.state is State.CLOSED:
                self._rto_deadline = None
                self._end(Closed(self.flow))
            elif self.state is State.TIME_WAIT:
                self._enter_time_wait(now)
        return True

    def _on_acked(self, ack: int, now: float) -> None:
        if self._rtt_seq is not None and ack >= self._rtt_seq:
            self._sample_rtt(now - self._rtt_start)
            self._rtt_seq = None
        data_end = self._queue_seq + self._queued
        acked_data = min(ack, data_end) - self._queue_seq
        if acked_data > 0:
            self._drop_acked(acked_data)
        self.snd_una = ack
        if ack > self.snd_nxt:
            self.snd_nxt = ack
            self._seek_cursor()
        self._duplicate_acks = 0
        self._retransmissions = 0
        self._rto_deadline = None if ack == self.snd_max else now + self.rto
        if self._send_blocked and self._queued <= self._config.send_buffer // 2:
            self._send_blocked = False
            if self.state in _SENDS_DATA:
                self._emit(SendSpace(self.flow))

    def _sample_rtt(self, sample: float) -> None:
        sample = max(sample, 0.0)
        if self._srtt is None:
            self._srtt = sample
            self._rttvar = sample / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - sample)
            self._srtt = 0.875 * self._srtt + 0.125 * sample
        rto = self._srtt + max(0.001, 4 * self._rttvar)
        self.rto = min(max(rto, self._config.min_rto), self._config.max_rto)

    def _handshake_done(self) -> None:
        self._fire(Trigger.HANDSHAKE_DONE)
        self._advertised_edge = max(self._advertised_edge, self.rcv_nxt)
        self._emit(Connected(self.flow))
        if self._fin_seq is not None:
            self._fire(Trigger.LOCAL_CLOSE)

    def _receive_in_syn_sent(self, segment: TcpSegment, now: float) -> None:
        flags = segment.flags
        if flags & ACK and self._our_seq(segment.ack) != self.iss + 1:
            if not flags & RST:
                self._send_reset_for(segment)
            return
        if flags & RST:
            if flags & ACK:
                self._terminate(Reset(self.flow, "connection refused"))
            return
        if not flags & SYN or not flags & ACK:
            return  # simultaneous open is not supported: the peer retransmits or gives up
        self.irs = segment.seq
        self.rcv_nxt = segment.seq + 1
        self._take_peer_options(segment)
        self._on_acked(self.iss + 1, now)
        self.snd_wnd = segment.window << self._snd_shift
        self._snd_wl1, self._snd_wl2 = self.rcv_nxt, self.iss + 1
        self._ack_pending = True
        self._handshake_done()

    def _accept_data(self, seq: int, payload: memoryview) -> None:
        rcv_nxt = self.rcv_nxt
        edge = rcv_nxt + self.receive_window
        if seq < rcv_nxt:
            payload = payload[rcv_nxt - seq :]
            seq = rcv_nxt
        if seq + len(payload) > edge:
            payload = payload[: max(0, edge - seq)]
        if not payload:
            return
        if seq > rcv_nxt:
            # Held until the gap fills; bounded in count and bytes (overlapping copies from
            # a hostile peer must not outgrow the receive buffer).
            kept = self._out_of_order.get(seq)
            growth = len(payload) - (len(kept) if kept is not None else 0)
            if (
                growth > 0
                and (kept is not None or len(self._out_of_order) < _MAX_OUT_OF_ORDER_SEGMENTS)
                and self._out_of_order_bytes + growth <= self._config.receive_buffer
            ):
                self._out_of_order[seq] = bytes(payload)
                self._out_of_order_bytes += growth
            return
        self._deliver(bytes(payload))
        if self._out_of_order:
            self._drain_out_of_order()

    def _deliver(self, data: bytes) -> None:
        self.rcv_nxt += len(data)
        self._unconsumed += len(data)
        self._emit(DataReceived(self.flow, data))

    def _drain_out_of_order(self) -> None:
        kept = self._out_of_order
        for start in sorted(kept):
            if start > self.rcv_nxt:
                break
            data = kept.pop(start)
            self._out_of_order_bytes -= len(data)
            end = start + len(data)
            if end > self.rcv_nxt:
                self._deliver(data[self.rcv_nxt - start :])

    def _accept_peer_fin(self, now: float) -> None:
        self._peer_fin_seq = None
        self.rcv_nxt += 1
        self._out_of_order.clear()
        self._out_of_order_bytes = 0
        self._ack_pending = True
        self._emit(PeerClosed(self.flow))
        self._fire(Trigger.PEER_FIN)
        if self.state is State.TIME_WAIT:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        self._rto_deadline = None
        self._persist_deadline = None
        self._time_wait_deadline = now + self._config.time_wait
        self._end(Closed(self.flow))

    def _send_reset_for(self, segment: TcpSegment) -> None:
        # The reply to an unacceptable ACK: a RST whose seq is the ACK it answers.
        self._reset_reply_seq = segment.ack

    def _terminate(self, event: Reset) -> None:
        self.state = State.CLOSED
        self._rto_deadline = None
        self._persist_deadline = None
        self._time_wait_deadline = None
        self._ack_pending = False
        self._probe_pending = False
        self._chunks.clear()
        self._head = self._head_offset = self._cursor_index = self._cursor_offset = 0
        self._out_of_order.clear()
        self._out_of_order_bytes = 0
        self._end(event)

    def _end(self, event: Closed | Reset) -> None:
        # Exactly one terminal event per connection, whatever happens after it.
        if not self._ended:
            self._ended = True
            self._emit(event)

    def _fire(self, trigger: Trigger) -> None:
        key = (self.state, trigger)
        if key not in _TRANSITIONS:
            raise LocalProtocolError(f"{trigger.value} in state {self.state.value}")
        self.state = _TRANSITIONS[key]

    # -- the send queue ------------------------------------------------------------------

    def _seal_staging(self) -> None:
        if self._staging:
            self._chunks.append(memoryview(bytes(self._staging)))
            self._staging.clear()

    def _drop_acked(self, count: int) -> None:
        chunks = self._chunks
        self._queue_seq += count
        self._queued -= count
        while count:
            available = len(chunks[self._head]) - self._head_offset
            if count < available:
                self._head_offset += count
                return
            count -= available
            chunks[self._head] = _EMPTY
            self._head += 1
            self._head_offset = 0
        if self._head > 256 and self._head * 2 > len(chunks):
            del chunks[: self._head]
            self._cursor_index -= self._head
            self._head = 0

    def _seek_cursor(self) -> None:
        offset = self.snd_nxt - self._queue_seq
        index, position = self._head, self._head_offset
        chunks = self._chunks
        while offset > 0 and index < len(chunks):
            available = len(chunks[index]) - position
            if offset < available:
                position += offset
                break
            offset -= available
            index += 1
            position = 0
        self._cursor_index, self._cursor_offset = index, position

    def _take(self, count: int) -> list[Chunk]:
        parts: list[Chunk] = []
        chunks = self._chunks
        index, position = self._cursor_index, self._cursor_offset
        while count:
            chunk = chunks[index]
            available = len(chunk) - position
            if count < available:
                parts.append(chunk[position : position + count])
                position += count
                break
            parts.append(chunk[position:] if position else chunk)
            count -= available
            index += 1
            position = 0
        self._cursor_index, self._cursor_offset = index, position
        return parts

    # -- producing -----------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Closed with nothing left to write: the owner may forget the connection."""
        return (
            self.state is State.CLOSED and not self._rst_pending and self._reset_reply_seq is None
        )

    def _window_field(self) -> int:
        window = self.receive_window
        field = min(window >> self._rcv_shift, 65535)
        self._advertised_edge = self.rcv_nxt + (field << self._rcv_shift)
        return field

    def produce(self, now: float, out: list[list[Chunk]], budget: int) -> bool:
        """Append up to `budget` packets to `out`; True if more are waiting."""
        if self._reset_reply_seq is not None:
            out.append(self._build(self._reset_reply_seq & _MASK, 0, RST, 0))
            self._reset_reply_seq = None
            budget -= 1
        if self._rst_pending:
            self._rst_pending = False
            out.append(self._build(self.snd_max & _MASK, self.rcv_nxt & _MASK, RST | ACK, 0))
            return False
        state = self.state
        if state is State.CLOSED:
            return False
        if state in (State.SYN_SENT, State.SYN_RECEIVED):
            if self.snd_nxt == self.iss and budget > 0:
                self._send_syn(now, out)
            return False
        sent = 0
        if budget > 0:
            sent = self._send_data(now, out, budget)
        budget -= sent
        if budget <= 0:
            return True
        if self._probe_pending:
            self._probe_pending = False
            out.append(
                self._build(
                    (self.snd_una - 1) & _MASK, self.rcv_nxt & _MASK, ACK, self._window_field()
                )
            )
            budget -= 1
            self._ack_pending = False
        if self._ack_pending and budget > 0:
            self._ack_pending = False
            out.append(
                self._build(self.snd_max & _MASK, self.rcv_nxt & _MASK, ACK, self._window_field())
            )
        return False

    def _send_syn(self, now: float, out: list[list[Chunk]]) -> None:
        if self.state is State.SYN_RECEIVED:
            flags, ack = SYN | ACK, self.rcv_nxt & _MASK
        else:
            flags, ack = SYN, 0
        window = min(self.receive_window, 65535)
        self._advertised_edge = self.rcv_nxt + window
        out.append(self._build(self.iss, ack, flags, window, (), self._syn_options))
        if self.snd_max == self.iss and self._rtt_seq is None and self._retransmissions == 0:
            self._rtt_seq, self._rtt_start = self.iss + 1, now
        self.snd_nxt = self.snd_max = self.iss + 1
        self._ack_pending = False
        if self._rto_deadline is None:
            self._arm_rto(now)

    def _send_data(self, now: float, out: list[list[Chunk]], budget: int) -> int:
        if self._staging:
            self._seal_staging()
        max_payload = GSO_MAX_PAYLOAD if self._config.gso else self.send_mss
        fin_seq = self._fin_seq
        fin_queued = fin_seq is not None and self.state in _FIN_QUEUED
        sent = 0
        while sent < budget:
            snd_nxt = self.snd_nxt
            available = self._queue_seq + self._queued - snd_nxt
            room = self.snd_una + self.snd_wnd - snd_nxt
            count = min(available, room, max_payload)
            if count < 0:
                count = 0
            with_fin = fin_queued and snd_nxt + count == fin_seq
            if not count and not with_fin:
                break
            flags = ACK
            if count == available:
                flags |= PSH
            if with_fin:
                flags |= FIN
            payload = self._take(count) if count else []
            out.append(
                self._build(
                    snd_nxt & _MASK,
                    self.rcv_nxt & _MASK,
                    flags,
                    self._window_field(),
                    payload,
                    b"",
                    self.send_mss,
                )
            )
            sent += 1
            new_nxt = snd_nxt + count + (1 if with_fin else 0)
            if new_nxt > self.snd_max:
                if self._rtt_seq is None and snd_nxt == self.snd_max:
                    self._rtt_seq, self._rtt_start = new_nxt, now
                self.snd_max = new_nxt
            self.snd_nxt = new_nxt
            self._ack_pending = False
            if self._rto_deadline is None:
                self._arm_rto(now)
            if with_fin:
                break
        if (
            self.snd_wnd == 0
            and self._queue_seq + self._queued > self.snd_nxt
            and self.snd_max == self.snd_una
            and self._persist_deadline is None
        ):
            self._persist_deadline = now + self.rto
        return sent

    @property
    def wants_to_produce(self) -> bool:
        """Whether `produce` would write something now."""
        if (
            self._rst_pending
            or self._reset_reply_seq is not None
            or self._ack_pending
            or self._probe_pending
        ):
            return True
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED):
            return self.snd_nxt == self.iss
        if self.state is State.CLOSED:
            return False
        available = self._queue_seq + self._queued - self.snd_nxt
        if available > 0:
            room = self.snd_una + self.snd_wnd - self.snd_nxt
            # With no room and nothing in flight, `produce` must run to arm the persist timer.
            if room > 0 or (self._persist_deadline is None and self.snd_max == self.snd_una):
                return True
        return (
            self._fin_seq is not None
            and self.state in _FIN_QUEUED
            and self.snd_nxt == self._fin_seq
        )

    def __repr__(self) -> str:
        return (
            f"TcpConnection({self.flow}, {self.state.value}, una={self.snd_una - self.iss} "
            f"nxt={self.snd_nxt - self.iss} max={self.snd_max - self.iss} "
            f"wnd={self.snd_wnd} queued={self._queued})"
        )


_EMPTY = memoryview(b"")


def segment_builder(
    build: Callable[..., list[Chunk]], local_port: int, remote_port: int
) -> SegmentBuilder:
    """Bind `PacketWriter.tcp` to a connection's ports."""

    def bound(
        seq: int,
        ack: int,
        flags: int,
        window: int,
        payload: Sequence[Chunk] = (),
        options: bytes = b"",
        mss: int = 0,
    ) -> list[Chunk]:
        return build(local_port, remote_port, seq, ack, flags, window, payload, options, mss)

    return bound
