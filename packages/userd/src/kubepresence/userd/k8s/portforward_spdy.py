"""Port-forward to a pod through the API server, over SPDY/3.1 (as kubectl does).

The connection is our own TLS connection to the API server, authenticated as
kubernetes-asyncio would (client certificate or bearer token from the kubeconfig),
upgraded with one HTTP/1.1 request; the frames are `core.portforward_spdy`. `SpdyStream` offers what
`PortForwardStream` (WebSocket) offers, so the gRPC channel runs on either.

`SpdyUnavailable` means this protocol cannot be used here (an HTTP proxy is configured,
or the server refused the upgrade); `portforward` then falls back to WebSocket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import urllib.parse
from typing import Any, cast

from kubernetes_asyncio import client

from kubepresence.protocol.errors import ClusterError
from kubepresence.userd.core.portforward_spdy import (
    HEADER_SIZE,
    Ended,
    ResponseHead,
    SpdyPortForward,
    SpdyProtocolError,
    UpgradeRefused,
    parse_upgrade_head,
    refusal_message,
    upgrade_request,
)
from kubepresence.userd.core.portforward_websocket import Data, PortError

log = logging.getLogger(__name__)

# Received bytes the reader has not taken: past HIGH_WATER the socket stops being read.
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
MAX_HEAD = 64 * 1024
MAX_REFUSAL_BODY = 64 * 1024
# What one DATA frame from the gRPC channel carries at most: the server reads each frame
# whole into memory, so bigger frames only raise memory peaks on both sides.
FRAME_PAYLOAD = 256 * 1024
REFUSAL_WAIT = 2.0  # for the body that says why an upgrade was refused


class SpdyUnavailable(Exception):  # noqa: N818 - a condition, handled by falling back
    """SPDY cannot be used to reach this API server; WebSocket may."""


class SpdyConnection(asyncio.Protocol):
    """The socket side: the upgrade's answer, then SPDY frames through the session."""

    def __init__(self, session: SpdyPortForward) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.head: asyncio.Future[ResponseHead] = asyncio.get_running_loop().create_future()
        self._head_bytes = bytearray()
        self.refusal_body = bytearray()
        self.refusal_complete = asyncio.Event()
        self.pending: collections.deque[memoryview] = collections.deque()
        self._pending_size = 0
        self._reading_paused = False
        self.changed = asyncio.Event()  # data, readiness, an error or the end arrived
        self.finished = asyncio.Event()  # an error or the end arrived
        self.writable = asyncio.Event()
        self.writable.set()
        self.error = ""
        self.ended = ""
        # Once a protocol is attached (`SpdyTransport`), data goes straight to it.
        self._protocol: asyncio.Protocol | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.Transport subclass, but is one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.head.done():
            if self.head.result().upgraded:
                self._frames(data)
            else:
                self._refusal(data)
            return
        self._head_bytes += data
        end = self._head_bytes.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head_bytes) > MAX_HEAD:
                self._fail_head(SpdyProtocolError("the upgrade answer's head is too long"))
            return
        try:
            head = parse_upgrade_head(bytes(self._head_bytes[:end]))
        except SpdyProtocolError as error:
            self._fail_head(error)
            return
        rest = bytes(self._head_bytes[end + 4 :])
        self._head_bytes.clear()
        self.head.set_result(head)
        if rest:
            self.data_received(rest)

    def _fail_head(self, error: Exception) -> None:
        self.head.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def _refusal(self, data: bytes) -> None:
        self.refusal_body += data[: MAX_REFUSAL_BODY - len(self.refusal_body)]
        length = self.head.result().headers.get("content-length", "")
        if len(self.refusal_body) >= MAX_REFUSAL_BODY or (
            length.isdigit() and len(self.refusal_body) >= int(length)
        ):
            self.refusal_complete.set()

    def _frames(self, data: bytes) -> None:
        try:
            events = self.session.receive(data)
        except SpdyProtocolError as error:
            self.error = f"protocol error from the server: {error}"
            self.changed.set()
            self.finished.set()
            assert self.transport is not None
            self.transport.abort()
            return
        protocol = self._protocol
        for event in events:
            if isinstance(event, Data):
                if protocol is not None:
                    protocol.data_received(event.payload)  # type: ignore[arg-type] # a view
                else:
                    self.pending.append(event.payload)
                    self._pending_size += len(event.payload)
            elif isinstance(event, PortError):
                self.error = self.error or event.message
                self.finished.set()
            elif isinstance(event, Ended):
                self.ended = event.reason
                self.finished.set()
            # Ready: seen through session.ready
        if events:
            self.changed.set()
        owed = self.session.data_to_send()
        if owed and self.transport is not None:
            self.transport.write(owed)
        if not self._reading_paused and self._pending_size > HIGH_WATER:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def taken(self, size: int) -> None:
        """The reader took `size` bytes of `pending`."""
        self._pending_size -= size
        if self._reading_paused and self._pending_size < LOW_WATER:
            self._reading_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def attach(self, protocol: asyncio.Protocol) -> None:
        """From now on hand data to `protocol` as it arrives, starting with what waits."""
        while self.pending:
            protocol.data_received(self.pending.popleft())  # type: ignore[arg-type] # a view
        self._pending_size = 0
        self._protocol = protocol
        if self._reading_paused:
            self._reading_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
        if not self.writable.is_set():
            protocol.pause_writing()

    def pause_writing(self) -> None:
        self.writable.clear()
        if self._protocol is not None:
            self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self.writable.set()
        if self._protocol is not None:
            self._protocol.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(
                ConnectionError(f"the API server closed the connection: {exc or 'EOF'}")
            )
        self.refusal_complete.set()
        self.ended = self.ended or f"the connection to the API server ended ({exc or 'EOF'})"
        self.finished.set()
        self.writable.set()
        self.changed.set()


class SpdyStream:
    """One open port-forward connection over SPDY: bytes in, bytes out."""

    def __init__(self, connection: SpdyConnection, port: int) -> None:
        self.connection = connection
        self._port = port
        assert connection.transport is not None
        self._transport = connection.transport

    def new_message(self) -> bytearray:
        """An empty data message: append the payload, then `send_message` it."""
        return SpdyPortForward.new_data_frame()

    async def send_message(self, message: bytearray) -> None:
        connection = self.connection
        if connection.error or connection.ended or self._transport.is_closing():
            raise ClusterError(
                f"port-forward to port {self._port} closed: {connection.error or connection.ended}"
            )
        self._transport.write(SpdyPortForward.seal_data_frame(message))
        if not connection.writable.is_set():
            await connection.writable.wait()

    async def send(self, data: bytes) -> None:
        message = self.new_message()
        message += data
        await self.send_message(message)

    async def receive(self) -> memoryview | None:
        """The next bytes from the pod (a view, no copy), or None when the connection ended."""
        connection = self.connection
        while not connection.pending:
            if connection.error:
                raise ClusterError(f"port-forward to port {self._port}: {connection.error}")
            if connection.ended:
                return None
            connection.changed.clear()
            await connection.changed.wait()
        chunk = connection.pending.popleft()
        connection.taken(len(chunk))
        return chunk

    async def wait_ready(self) -> None:
        """Wait until the server replied to both streams (the pod side is there)."""
        connection = self.connection
        while not connection.session.ready:
            if connection.error:
                raise ClusterError(f"port-forward: {connection.error}")
            if connection.ended:
                raise ClusterError(f"port-forward closed before it opened: {connection.ended}")
            connection.changed.clear()
            await connection.changed.wait()

    def close(self) -> None:
        if not self._transport.is_closing():
            self._transport.write(SpdyPortForward.goodbye())
            self._transport.close()


class SpdyTransport(asyncio.Transport):
    """An asyncio transport straight over a SPDY port-forward, for the gRPC channel.

    What the protocol writes in one turn of the event loop leaves as DATA frames of up to
    `FRAME_PAYLOAD`; what arrives is handed to the protocol as the frames are parsed, and
    the socket's flow control reaches the protocol as is. No task or queue in between
    (the WebSocket's `PortForwardTransport` needs both, to await aiohttp's writes): each
    message through userd saves two task switches. `pump` waits until the forward ends
    or `close` is called, then tells the protocol the connection is lost.
    """

    def __init__(self, stream: SpdyStream, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._connection = stream.connection
        assert self._connection.transport is not None
        self._socket = self._connection.transport
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._frame = SpdyPortForward.new_data_frame()
        self._flush_scheduled = False
        self._closing = False

    # asyncio.Transport, as grpclib's protocol uses it
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        view = memoryview(data)
        while view:
            room = FRAME_PAYLOAD - (len(self._frame) - HEADER_SIZE)
            self._frame += view[:room]
            view = view[room:]
            if len(self._frame) - HEADER_SIZE >= FRAME_PAYLOAD:
                self._flush()
        if len(self._frame) > HEADER_SIZE and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if len(self._frame) > HEADER_SIZE and not self._socket.is_closing():
            self._socket.write(SpdyPortForward.seal_data_frame(self._frame))
            self._frame = SpdyPortForward.new_data_frame()

    def is_closing(self) -> bool:
        return self._closing or self._socket.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._flush()  # what was written before close still leaves
        self._closing = True
        if not self._socket.is_closing():
            self._socket.write(SpdyPortForward.goodbye())
            self._socket.close()

    def abort(self) -> None:
        self._frame = SpdyPortForward.new_data_frame()
        self._closing = True
        self._socket.abort()

    def can_write_eof(self) -> bool:
        return False  # a half-close would end the forward's data stream

    def get_write_buffer_size(self) -> int:
        return self._socket.get_write_buffer_size() + len(self._frame) - HEADER_SIZE

    def pause_reading(self) -> None:
        self._socket.pause_reading()

    def resume_reading(self) -> None:
        self._socket.resume_reading()

    def is_reading(self) -> bool:
        return self._socket.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default  # the socket is the API server's, not the peer's

    async def pump(self) -> None:
        """Deliver until the forward ends or `close`; then connection_lost, once."""
        error: Exception | None = None
        try:
            self._connection.attach(self._protocol)
            await self._connection.finished.wait()
            if self._connection.error:
                error = ClusterError(f"port-forward failed: {self._connection.error}")
                log.warning("port-forward to the traffic manager failed: %s", error)
        finally:
            self._closing = True
            if not self._socket.is_closing():
                self._socket.close()
            self._protocol.connection_lost(error)


def ssl_context(configuration: client.Configuration) -> ssl.SSLContext:
    """The TLS settings kubernetes-asyncio's REST client uses for this configuration."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    context.set_alpn_protocols(["http/1.1"])  # an upgrade needs HTTP/1.1
    return context


async def _auth_headers(configuration: client.Configuration) -> dict[str, str]:
    settings: dict[str, Any] = await configuration.auth_settings()
    return {
        setting["key"]: setting["value"]
        for setting in settings.values()
        if setting.get("in") == "header" and setting.get("value")
    }


async def open_spdy(
    configuration: client.Configuration, namespace: str, pod: str, port: int
) -> SpdyStream:
    """An open, ready port-forward to `port` of the pod (the caller bounds the time)."""
    if configuration.proxy:
        raise SpdyUnavailable("an HTTP proxy is configured")
    url = urllib.parse.urlsplit(str(configuration.host))
    if url.scheme not in ("https", "http") or not url.hostname:
        raise SpdyUnavailable(f"API server address {configuration.host!r}")
    secure = url.scheme == "https"
    server_port = url.port or (443 if secure else 80)
    path = (
        f"{url.path.rstrip('/')}/api/v1/namespaces/{urllib.parse.quote(namespace)}"
        f"/pods/{urllib.parse.quote(pod)}/portforward"
    )
    session = SpdyPortForward(port)
    loop = asyncio.get_running_loop()
    transport, connection = await loop.create_connection(
        lambda: SpdyConnection(session),
        url.hostname,
        server_port,
        ssl=ssl_context(configuration) if secure else None,
        server_hostname=(configuration.tls_server_name or url.hostname) if secure else None,
    )
    try:
        transport.write(upgrade_request(url.netloc, path, await _auth_headers(configuration)))
        head = await connection.head
        if not head.upgraded:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFUSAL_WAIT):
                    await connection.refusal_complete.wait()
            message = refusal_message(bytes(connection.refusal_body))
            raise UpgradeRefused(
                head.status, f"{head.reason}: {message}" if message else head.reason
            )
        transport.write(session.opening())
        stream = SpdyStream(connection, port)
        await stream.wait_ready()
    except BaseException:
        transport.abort()
        if connection.head.done() and not connection.head.cancelled():
            connection.head.exception()  # seen: asyncio need not report it as lost
        raise
    return stream
