"""Sans-IO HTTP/1.1 framing that keeps the bytes as they came.

The agent's HTTP router reads requests from a caller, chooses a destination per request
and forwards that request's bytes *unchanged*; it never re-serialises a message. So these
parsers only find where messages begin and end and what their heads say: every event
carries the raw bytes it covers, and the concatenation of the raw bytes of all events
(`RequestHead.raw`/`ResponseHead.raw`, `Body.data`) is exactly the input consumed (but for
empty lines before a request line, which are dropped).

Model: the caller `feed`s bytes as they arrive (`feed_eof` when the peer closed) and pulls
events with `next_event` until it returns `NEED_DATA`. Pulling is the caller's pacing: a
router that must not look at request N+1 before response N has ended simply stops asking.
A parser never raises on peer input: malformed input yields one `ParseError` event (the
same one again on every later call) and the parser is dead. A `RequestParser` lives for one
client connection; a `ResponseParser` for one upstream connection, told before each
request which method it answers (`expect`), since that decides whether a response has a
body (HEAD, CONNECT).

States and transitions (both parsers; `feed_eof` in brackets):

    state        | input                                  | events, next state
    HEAD         | a complete head                        | *Head; BODY by framing (below)
    HEAD         | nothing buffered [eof]                 | Closed; CLOSED
    HEAD         | more than `max_head` bytes, no end     | ParseError; ERROR
    LENGTH(n)    | up to n bytes                          | Body; LENGTH(n - k) or END
    CHUNK_SIZE   | "hex[;ext]\\r\\n"                       | Body; CHUNK_DATA(size) or TRAILERS
    CHUNK_DATA(n)| up to n bytes                          | Body; CHUNK_DATA(n - k) or CHUNK_END
    CHUNK_END    | "\\r\\n"                                 | Body; CHUNK_SIZE
    TRAILERS     | "field\\r\\n" ... "\\r\\n"                | Body; END
    CLOSE_BODY   | any bytes [eof]                        | Body [EndOfMessage, Closed]
    END          | (none)                                 | EndOfMessage; HEAD
    SWITCHED     | (none: bytes stay in `buffered`)       | nothing more
    any body     | [eof]                                  | ParseError; ERROR

Framing of a request (RFC 9112 §6): `Transfer-Encoding` ending in `chunked` → chunked;
`Content-Length` → LENGTH; neither → no body. Both at once, a Transfer-Encoding not ending
in chunked, or differing Content-Lengths are errors: a request the upstream could frame
differently from us is refused rather than smuggled. Framing of a response: 1xx (but 101),
204, 304 and answers to HEAD have no body; 101, and 2xx to CONNECT, switch protocols (the
head is followed by `Switched`; the rest of the connection is not HTTP); chunked, then
Content-Length, else the body runs to the end of the connection (CLOSE_BODY).

Heads must use CRLF line ends; bare CR or LF, obsolete line folding and whitespace before
a field's colon are errors (RFC 9112 §2.2, §5.1, §5.2). Empty lines before a request line
are skipped (§2.2).
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4096
MAX_METHOD = 32

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = re.compile(rb"[" + _TCHAR + rb"]+")
_TARGET = re.compile(rb"[^\x00-\x20\x7f]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_FIELD_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(rb"[0-9]{1,19}")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Verdict(enum.Enum):
    """What the first bytes of a connection say."""

    YES = "yes"
    NO = "no"
    NEED_MORE = "need more"


@dataclass(frozen=True)
class RequestHead:
    """A request's head. Names are lower-case, values stripped, both decoded latin-1."""

    method: str
    target: str
    version: str  # "HTTP/1.1", "HTTP/1.0" ("HTTP/2" when made from an h2c request)
    headers: tuple[tuple[str, str], ...]
    raw: bytes = field(repr=False)
    keep_alive: bool = True  # the client allows another request on this connection
    expect_continue: bool = False  # "Expect: 100-continue": the body waits for a 100
    upgrade: bool = False  # asks to switch protocols (Upgrade, or CONNECT)

    def header(self, name: str) -> str | None:
        """The first value of a header, by lower-case name."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class ResponseHead:
    status: int
    reason: str
    version: str
    headers: tuple[tuple[str, str], ...]
    raw: bytes = field(repr=False)
    keep_alive: bool = True  # the connection can carry another request after this one

    @property
    def interim(self) -> bool:
        """A 1xx response that another response follows (not 101, which switches)."""
        return 100 <= self.status < 200 and self.status != 101


@dataclass(frozen=True)
class Body:
    data: bytes  # raw, chunk framing and trailers included


@dataclass(frozen=True)
class EndOfMessage:
    pass


@dataclass(frozen=True)
class Switched:
    """The connection stopped being HTTP after the last head: raw bytes from here on."""


@dataclass(frozen=True)
class Closed:
    """The peer closed the connection between messages."""


@dataclass(frozen=True)
class ParseError:
    """The peer sent something that is not HTTP/1.1 we can frame; the parser is dead."""

    reason: str


class NeedData(enum.Enum):
    NEED_DATA = "need data"


NEED_DATA = NeedData.NEED_DATA

Event = RequestHead | ResponseHead | Body | EndOfMessage | Switched | Closed | ParseError


class _MalformedError(Exception):
    pass


class _State(enum.Enum):
    HEAD = enum.auto()
    LENGTH = enum.auto()
    CHUNK_SIZE = enum.auto()
    CHUNK_DATA = enum.auto()
    CHUNK_END = enum.auto()
    TRAILERS = enum.auto()
    CLOSE_BODY = enum.auto()
    SWITCHED = enum.auto()
    CLOSED = enum.auto()
    ERROR = enum.auto()


class _Framing(enum.Enum):
    NONE = enum.auto()
    LENGTH = enum.auto()
    CHUNKED = enum.auto()
    CLOSE = enum.auto()
    SWITCH = enum.auto()


def _tokens(headers: list[tuple[str, str]], name: str) -> list[str]:
    """The comma-separated, lower-cased tokens of every field called `name`."""
    return [
        token.strip(" \t").lower()
        for key, value in headers
        if key == name
        for token in value.split(",")
        if token.strip(" \t")
    ]


def _split_head(raw: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    """Start line and (name, value) fields of a head ending in CRLF CRLF."""
    lines = raw[:-4].split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise _MalformedError("bare CR or LF in a message head")
    return lines[0], [_field(line) for line in lines[1:]]


def _field(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise _MalformedError("obsolete line folding in a header field")
    name, sep, value = line.partition(b":")
    if not sep:
        raise _MalformedError(f"header line without a colon: {line[:40]!r}")
    if _TOKEN.fullmatch(name) is None:
        raise _MalformedError(f"invalid header name {name[:40]!r}")
    value = value.strip(b" \t")
    if _FIELD_VALUE_BAD.search(value):
        raise _MalformedError(f"control character in header {name.decode()!r}")
    return name.decode("ascii").lower(), value.decode("latin-1")


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    values = {
        v.strip(" \t")
        for key, value in headers
        if key == "content-length"
        for v in value.split(",")
    }
    if not values:
        return None
    if len(values) > 1:
        raise _MalformedError("conflicting Content-Length values")
    (value,) = values
    if _DIGITS.fullmatch(value.encode("latin-1")) is None:
        raise _MalformedError(f"invalid Content-Length {value[:40]!r}")
    return int(value)


def _keep_alive(version: str, connection: list[str]) -> bool:
    if "close" in connection:
        return False
    return version == "HTTP/1.1" or "keep-alive" in connection


class _Parser:
    def __init__(self, max_head: int) -> None:
        self.max_head = max_head
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for the end of a line/head
        self._eof = False
        self._state = _State.HEAD
        self._remaining = 0
        self._trailer_bytes = 0
        self._events: deque[Event] = deque()
        self._error: ParseError | None = None

    def feed(self, data: bytes) -> None:
        """Bytes from the peer, as they arrive."""
        if self._eof:
            return
        self._buf += data

    def feed_eof(self) -> None:
        """The peer closed its sending side."""
        self._eof = True

    @property
    def buffered(self) -> bytes:
        """Bytes received but not consumed by any event (after `Switched`: the tunnel's)."""
        return bytes(self._buf)

    def take_buffered(self) -> bytes:
        """`buffered`, removed from the parser (for a connection that switched protocols)."""
        data = bytes(self._buf)
        self._buf.clear()
        self._scanned = 0
        return data

    def next_event(self) -> Event | NeedData:
        """The next event, or `NEED_DATA` until more bytes (or the EOF) are fed."""
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            return self._error
        try:
            self._step()
        except _MalformedError as error:
            self._events.clear()
            self._error = ParseError(str(error))
            self._state = _State.ERROR
            return self._error
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    # -- one step of the state machine: appends events, or none when bytes are missing --

    def _step(self) -> None:
        state = self._state
        if state is _State.HEAD:
            self._step_head()
        elif state is _State.LENGTH:
            self._step_length()
        elif state is _State.CLOSE_BODY:
            self._step_close_body()
        elif state in (_State.CHUNK_SIZE, _State.CHUNK_DATA, _State.CHUNK_END, _State.TRAILERS):
            self._step_chunked()
        # SWITCHED, CLOSED: nothing more to say; ERROR is handled in next_event.

    def _step_head(self) -> None:
        raw = self._take_head()
        if raw is None:
            return
        framing = self._on_head(raw)
        self._enter_body(framing)

    def _take_head(self) -> bytes | None:
        self._skip_leading_empty_lines()
        end = self._buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end + 4 > self.max_head or (end < 0 and len(self._buf) > self.max_head):
            raise _MalformedError(f"message head larger than {self.max_head} bytes")
        if end < 0:
            self._scanned = len(self._buf)
            if self._eof:
                if self._buf:
                    raise _MalformedError("connection closed inside a message head")
                self._state = _State.CLOSED
                self._events.append(Closed())
            return None
        raw = bytes(self._buf[: end + 4])
        del self._buf[: end + 4]
        self._scanned = 0
        return raw

    def _skip_leading_empty_lines(self) -> None:
        pass

    def _on_head(self, raw: bytes) -> _Framing:
        raise NotImplementedError

    def _on_end(self) -> None:
        self._state = _State.HEAD

    def _enter_body(self, framing: _Framing) -> None:
        if framing is _Framing.NONE or (framing is _Framing.LENGTH and self._remaining == 0):
            self._end()
        elif framing is _Framing.LENGTH:
            self._state = _State.LENGTH
        elif framing is _Framing.CHUNKED:
            self._state = _State.CHUNK_SIZE
        elif framing is _Framing.CLOSE:
            self._state = _State.CLOSE_BODY
        else:
            self._state = _State.SWITCHED
            self._events.append(Switched())

    def _end(self) -> None:
        self._events.append(EndOfMessage())
        self._on_end()

    def _take(self, n: int) -> bytes:
        if n >= len(self._buf):
            data = bytes(self._buf)
            self._buf.clear()
        else:
            data = bytes(self._buf[:n])
            del self._buf[:n]
        return data

    def _step_length(self) -> None:
        if not self._buf:
            if self._eof:
                raise _MalformedError("connection closed before the end of the body")
            return
        data = self._take(self._remaining)
        self._remaining -= len(data)
        self._events.append(Body(data))
        if self._remaining == 0:
            self._end()

    def _step_close_body(self) -> None:
        if self._buf:
            self._events.append(Body(self._take(len(self._buf))))
        if self._eof:
            self._end()
            self._state = _State.CLOSED
            self._events.append(Closed())

    def _step_chunked(self) -> None:
        out = bytearray()
        ended = False
        while not ended:
            state = self._state
            if state is _State.CHUNK_DATA:
                if not self._buf:
                    break
                data = self._take(self._remaining)
                out += data
                self._remaining -= len(data)
                if self._remaining == 0:
                    self._state = _State.CHUNK_END
            elif state is _State.CHUNK_END:
                if len(self._buf) < 2:
                    if bytes(self._buf[:1]) not in (b"", b"\r"):
                        raise _MalformedError("chunk data longer than its size")
                    break
                if self._buf[:2] != b"\r\n":
                    raise _MalformedError("chunk data longer than its size")
                out += self._take(2)
                self._state = _State.CHUNK_SIZE
            else:
                line = self._take_line(MAX_CHUNK_LINE if state is _State.CHUNK_SIZE else None)
                if line is None:
                    break
                out += line
                if state is _State.CHUNK_SIZE:
                    size = self._chunk_size(line)
                    if size:
                        self._state, self._remaining = _State.CHUNK_DATA, size
                    else:
                        self._state, self._trailer_bytes = _State.TRAILERS, 0
                elif line == b"\r\n":
                    ended = True
                else:
                    self._trailer_bytes += len(line)
                    if self._trailer_bytes > self.max_head:
                        raise _MalformedError(f"trailers larger than {self.max_head} bytes")
                    _field(line[:-2])
        if out:
            self._events.append(Body(bytes(out)))
        if ended:
            self._end()
        elif self._eof and not self._events:
            raise _MalformedError("connection closed before the end of the chunked body")

    def _take_line(self, limit: int | None) -> bytes | None:
        """A line with its CRLF, or None while incomplete."""
        end = self._buf.find(b"\r\n", max(0, self._scanned - 1))
        limit = limit if limit is not None else self.max_head
        if end < 0:
            if len(self._buf) > limit:
                raise _MalformedError(f"line longer than {limit} bytes in a chunked body")
            self._scanned = len(self._buf)
            return None
        self._scanned = 0
        return self._take(end + 2)

    @staticmethod
    def _chunk_size(line: bytes) -> int:
        size = line[:-2].split(b";", 1)[0].rstrip(b" \t")
        if b"\r" in line[:-2] or b"\n" in line[:-2] or _CHUNK_SIZE.fullmatch(size) is None:
            raise _MalformedError(f"invalid chunk size line {line[:40]!r}")
        return int(size, 16)


class RequestParser(_Parser):
    """Requests from one client connection, in order (pipelined ones too)."""

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        super().__init__(max_head)

    def _skip_leading_empty_lines(self) -> None:
        while self._buf[:2] == b"\r\n":
            del self._buf[:2]
            self._scanned = 0

    def _on_head(self, raw: bytes) -> _Framing:
        start, headers = _split_head(raw)
        parts = start.split(b" ")
        if len(parts) != 3:
            raise _MalformedError(f"invalid request line {start[:60]!r}")
        method, target, version = parts
        if _TOKEN.fullmatch(method) is None:
            raise _MalformedError(f"invalid method {method[:40]!r}")
        if _TARGET.fullmatch(target) is None:
            raise _MalformedError(f"invalid request target {target[:60]!r}")
        if _VERSION.fullmatch(version) is None:
            raise _MalformedError(f"unsupported protocol version {version[:20]!r}")
        version_s = version.decode("ascii")
        connection = _tokens(headers, "connection")
        codings = _tokens(headers, "transfer-encoding")
        length = _content_length(headers)
        if codings and length is not None:
            raise _MalformedError("both Content-Length and Transfer-Encoding in a request")
        if codings and codings[-1] != "chunked":
            raise _MalformedError("request Transfer-Encoding does not end in chunked")
        method_s = method.decode("ascii")
        has_upgrade = any(key == "upgrade" for key, _ in headers)
        self._events.append(
            RequestHead(
                method=method_s,
                target=target.decode("latin-1"),
                version=version_s,
                headers=tuple(headers),
                raw=raw,
                keep_alive=_keep_alive(version_s, connection),
                expect_continue="100-continue" in _tokens(headers, "expect"),
                upgrade=method_s == "CONNECT" or (has_upgrade and "upgrade" in connection),
            )
        )
        if codings:
            return _Framing.CHUNKED
        self._remaining = length or 0
        return _Framing.LENGTH


class ResponseParser(_Parser):
    """Responses on one upstream connection; `expect(method)` before each request."""

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        super().__init__(max_head)
        self._methods: deque[str] = deque()
        self._interim = False

    def expect(self, method: str) -> None:
        """A request with this method was sent: the next response answers it."""
        self._methods.append(method)

    def _step_head(self) -> None:
        if not self._methods:
            if self._buf:
                raise _MalformedError("response without a request")
            if self._eof and self._state is _State.HEAD:
                self._state = _State.CLOSED
                self._events.append(Closed())
            return
        super()._step_head()

    def _on_head(self, raw: bytes) -> _Framing:
        start, headers = _split_head(raw)
        match = _STATUS_LINE.fullmatch(start)
        if match is None:
            raise _MalformedError(f"invalid status line {start[:60]!r}")
        version = match[1].decode("ascii")
        status = int(match[2])
        if status < 100:
            raise _MalformedError(f"invalid status code {status}")
        method = self._methods[0]
        connection = _tokens(headers, "connection")
        codings = _tokens(headers, "transfer-encoding")
        length = None if codings else _content_length(headers)
        if 100 <= status < 200 and status != 101:
            framing = _Framing.NONE
        elif status == 101 or (method == "CONNECT" and 200 <= status < 300):
            framing = _Framing.SWITCH
        elif method == "HEAD" or status in (204, 304):
            framing = _Framing.NONE
        elif codings:
            framing = _Framing.CHUNKED if codings[-1] == "chunked" else _Framing.CLOSE
        elif length is not None:
            framing = _Framing.LENGTH
            self._remaining = length
        else:
            framing = _Framing.CLOSE
        keep_alive = _keep_alive(version, connection) and framing is not _Framing.CLOSE
        self._events.append(
            ResponseHead(
                status=status,
                reason=(match[3] or b"").decode("latin-1"),
                version=version,
                headers=tuple(headers),
                raw=raw,
                keep_alive=keep_alive and framing is not _Framing.SWITCH,
            )
        )
        if 100 <= status < 200 and status != 101:
            # Interim: no body, no EndOfMessage; the final response to the same request follows.
            self._interim = True
        return framing

    def _end(self) -> None:
        if self._interim:
            self._interim = False
            self._state = _State.HEAD
            return
        super()._end()

    def _on_end(self) -> None:
        self._methods.popleft()
        self._state = _State.HEAD


def is_h2c_preface(first: bytes) -> Verdict:
    """Whether a connection starts with the HTTP/2 prior-knowledge preface."""
    n = min(len(first), len(H2_PREFACE))
    if first[:n] != H2_PREFACE[:n]:
        return Verdict.NO
    return Verdict.YES if n == len(H2_PREFACE) else Verdict.NEED_MORE


def looks_like_http1(first: bytes, max_line: int = MAX_HEAD) -> Verdict:
    """Whether a connection starts with an HTTP/1.x request line.

    YES once a whole request line `METHOD SP TARGET SP HTTP/1.x CRLF` has arrived; NO as
    soon as the bytes cannot be the beginning of one; NEED_MORE in between.
    """
    i = 0
    while first[i : i + 2] == b"\r\n":
        i += 2
    if first[i : i + 1] == b"\r" and len(first) == i + 1:
        return Verdict.NEED_MORE
    # METHOD
    space = first.find(b" ", i)
    method = first[i:] if space < 0 else first[i:space]
    if (method and _TOKEN.fullmatch(method) is None) or len(method) > MAX_METHOD:
        return Verdict.NO
    if space < 0:
        return Verdict.NEED_MORE
    if space == i:
        return Verdict.NO
    # TARGET
    start = space + 1
    space = first.find(b" ", start)
    target = first[start:] if space < 0 else first[start:space]
    if target and _TARGET.fullmatch(target) is None:
        return Verdict.NO
    if space < 0:
        return Verdict.NEED_MORE if len(first) <= max_line else Verdict.NO
    if space == start:
        return Verdict.NO
    # VERSION CRLF
    rest = first[space + 1 : space + 11]
    for expected in (b"HTTP/1.1\r\n", b"HTTP/1.0\r\n"):
        n = min(len(rest), len(expected))
        if rest[:n] == expected[:n]:
            return Verdict.YES if n == len(expected) else Verdict.NEED_MORE
    return Verdict.NO
