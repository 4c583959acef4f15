"""The agent's sans-IO HTTP/1.1 framing, driven directly (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepresence.agent.core.http1 import (
    NEED_DATA,
    Body,
    Closed,
    EndOfMessage,
    Event,
    ParseError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    Switched,
    Verdict,
    is_h2c_preface,
    looks_like_http1,
)

Parser = RequestParser | ResponseParser


def drain(parser: Parser, limit: int = 10_000) -> list[Event]:
    """Every event available now (bounded, so a parser bug cannot hang a test)."""
    events: list[Event] = []
    for _ in range(limit):
        event = parser.next_event()
        if event is NEED_DATA:
            return events
        assert not isinstance(event, NeedDataLike)
        events.append(event)
        if isinstance(event, ParseError | Closed | Switched):
            return events
    raise AssertionError("parser never asked for data")


NeedDataLike = type(NEED_DATA)


def merged(events: list[Event]) -> list[Event]:
    """Adjacent Body events joined: how a message is split into Body events is free."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Body) and out and isinstance(out[-1], Body):
            out[-1] = Body(out[-1].data + event.data)
        elif not (isinstance(event, Body) and not event.data):
            out.append(event)
    return out


def parse(parser: Parser, *pieces: bytes, eof: bool = False) -> list[Event]:
    events: list[Event] = []
    for piece in pieces:
        parser.feed(piece)
        events += drain(parser)
    if eof:
        parser.feed_eof()
        events += drain(parser)
    return merged(events)


def requests(*pieces: bytes, eof: bool = False) -> list[Event]:
    return parse(RequestParser(), *pieces, eof=eof)


def responses(methods: list[str], *pieces: bytes, eof: bool = False) -> list[Event]:
    parser = ResponseParser()
    for method in methods:
        parser.expect(method)
    return parse(parser, *pieces, eof=eof)


def raw_of(events: list[Event]) -> bytes:
    out = b""
    for event in events:
        if isinstance(event, RequestHead | ResponseHead):
            out += event.raw
        elif isinstance(event, Body):
            out += event.data
    return out


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


# -- requests ---------------------------------------------------------------------------

GET = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Dev:  alice \r\n\r\n"


def test_simple_get() -> None:
    events = requests(GET)
    assert kinds(events) == ["RequestHead", "EndOfMessage"]
    head = events[0]
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.version) == ("GET", "/a?b=1", "HTTP/1.1")
    assert head.headers == (("host", "x"), ("x-dev", "alice"))
    assert head.header("x-dev") == "alice"
    assert head.header("nope") is None
    assert head.raw == GET
    assert head.keep_alive
    assert not head.expect_continue
    assert not head.upgrade


def test_content_length_body() -> None:
    msg = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    events = requests(msg)
    assert kinds(events) == ["RequestHead", "Body", "EndOfMessage"]
    assert events[1] == Body(b"hello")
    assert raw_of(events) == msg


def test_content_length_zero_and_repeated_equal_values() -> None:
    assert kinds(requests(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")) == [
        "RequestHead",
        "EndOfMessage",
    ]
    msg = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok"
    assert raw_of(requests(msg)) == msg


CHUNKED = (
    b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n"
    b"A\r\n0123456789\r\n"
    b"0\r\nX-Checksum: abc\r\n\r\n"
)


def test_chunked_body_is_forwarded_raw_with_trailers() -> None:
    events = requests(CHUNKED)
    assert kinds(events) == ["RequestHead", "Body", "EndOfMessage"]
    assert raw_of(events) == CHUNKED
    assert isinstance(events[1], Body)
    assert events[1].data.endswith(b"0\r\nX-Checksum: abc\r\n\r\n")


def test_chunked_wins_with_other_codings_first() -> None:
    msg = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n0\r\n\r\n"
    assert kinds(requests(msg)) == ["RequestHead", "Body", "EndOfMessage"]


def test_pipelined_requests_in_one_feed() -> None:
    data = GET + b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" + CHUNKED + GET
    events = requests(data)
    assert kinds(events) == [
        "RequestHead",
        "EndOfMessage",
        "RequestHead",
        "Body",
        "EndOfMessage",
        "RequestHead",
        "Body",
        "EndOfMessage",
        "RequestHead",
        "EndOfMessage",
    ]
    assert raw_of(events) == data


def test_pull_pacing_leaves_the_next_request_buffered() -> None:
    parser = RequestParser()
    parser.feed(GET + GET)
    assert isinstance(parser.next_event(), RequestHead)
    assert isinstance(parser.next_event(), EndOfMessage)
    assert parser.buffered == GET  # not looked at until asked


def test_one_byte_at_a_time() -> None:
    data = GET + CHUNKED
    assert requests(*[data[i : i + 1] for i in range(len(data))]) == requests(data)


def test_expect_continue() -> None:
    head = requests(b"PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")[0]
    assert isinstance(head, RequestHead)
    assert head.expect_continue


@pytest.mark.parametrize(
    ("head", "upgrade"),
    [
        (b"GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n", True),
        (b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n", False),  # no Connection: upgrade
        (b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\n", False),  # no Upgrade
        (b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n", True),
    ],
)
def test_upgrade_requests(head: bytes, upgrade: bool) -> None:
    event = requests(head + b"\r\n")[0]
    assert isinstance(event, RequestHead)
    assert event.upgrade is upgrade


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"HTTP/1.1", b"", True),
        (b"HTTP/1.1", b"Connection: close\r\n", False),
        (b"HTTP/1.1", b"Connection: Keep-Alive, CLOSE\r\n", False),
        (b"HTTP/1.0", b"", False),
        (b"HTTP/1.0", b"Connection: keep-alive\r\n", True),
    ],
)
def test_keep_alive_rules(version: bytes, connection: bytes, keep_alive: bool) -> None:
    event = requests(b"GET / " + version + b"\r\n" + connection + b"\r\n")[0]
    assert isinstance(event, RequestHead)
    assert event.keep_alive is keep_alive


def test_leading_empty_lines_are_skipped() -> None:
    events = requests(b"\r\n\r\n" + GET)
    assert isinstance(events[0], RequestHead)
    assert events[0].raw == GET


def test_eof_between_requests_is_closed() -> None:
    assert kinds(requests(GET, eof=True)) == ["RequestHead", "EndOfMessage", "Closed"]
    assert kinds(requests(eof=True)) == ["Closed"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost", "inside a message head"),
        (b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc", "before the end of the body"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "chunked body"),
    ],
)
def test_eof_inside_a_message_is_an_error(data: bytes, reason: str) -> None:
    events = requests(data, eof=True)
    assert isinstance(events[-1], ParseError)
    assert reason in events[-1].reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET /\r\n\r\n", "invalid request line"),
        (b"GET  / HTTP/1.1\r\n\r\n", "invalid request line"),
        (b"G(T / HTTP/1.1\r\n\r\n", "invalid method"),
        (b"GET / HTTP/2.0\r\n\r\n", "unsupported protocol version"),
        (b"GET /\x01 HTTP/1.1\r\n\r\n", "invalid request target"),
        (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", "without a colon"),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "invalid header name"),
        (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", "obsolete line folding"),
        (b"GET / HTTP/1.1\nA: b\r\n\r\n", "bare CR or LF"),
        (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", "control character"),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", "invalid Content-Length"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "both Content-Length and Transfer-Encoding",
        ),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "does not end in chunked"),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
            "invalid chunk size",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
            "longer than its size",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
            "without a colon",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000,
            "line longer than 4096",
        ),
    ],
)
def test_malformed_requests(data: bytes, reason: str) -> None:
    events = requests(data)
    assert isinstance(events[-1], ParseError), events
    assert reason in events[-1].reason


def test_error_is_sticky() -> None:
    parser = RequestParser()
    parser.feed(b"BAD\r\n\r\n")
    error = parser.next_event()
    assert isinstance(error, ParseError)
    parser.feed(GET)
    assert parser.next_event() == error


def test_head_size_limit() -> None:
    parser = RequestParser(max_head=1024)
    parser.feed(b"GET / HTTP/1.1\r\n")
    for _ in range(100):
        parser.feed(b"X-Filler: " + b"y" * 20 + b"\r\n")
        event = parser.next_event()
        if event is not NEED_DATA:
            break
    assert isinstance(event, ParseError)
    assert "larger than 1024" in event.reason


def test_head_just_under_the_limit_passes() -> None:
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * 1000 + b"\r\n\r\n"
    assert isinstance(RequestParser(max_head=len(head)).next_event(), type(NEED_DATA))
    parser = RequestParser(max_head=len(head))
    parser.feed(head)
    assert isinstance(parser.next_event(), RequestHead)
    parser = RequestParser(max_head=len(head) - 1)
    parser.feed(head)
    assert isinstance(parser.next_event(), ParseError)


def test_a_large_body_comes_in_pieces_as_fed() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 300000\r\n\r\n")
    assert isinstance(parser.next_event(), RequestHead)
    total = 0
    for _ in range(3):
        parser.feed(b"z" * 100_000)
        event = parser.next_event()
        assert isinstance(event, Body)
        total += len(event.data)
        assert parser.buffered == b""  # nothing kept back
    assert total == 300_000
    assert isinstance(parser.next_event(), EndOfMessage)


# -- responses --------------------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_response_with_length() -> None:
    events = responses(["GET"], OK)
    assert kinds(events) == ["ResponseHead", "Body", "EndOfMessage"]
    head = events[0]
    assert isinstance(head, ResponseHead)
    assert (head.status, head.reason, head.version) == (200, "OK", "HTTP/1.1")
    assert head.keep_alive
    assert raw_of(events) == OK


def test_head_response_has_no_body() -> None:
    msg = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    events = responses(["HEAD", "GET"], msg + OK)
    assert kinds(events) == ["ResponseHead", "EndOfMessage", "ResponseHead", "Body", "EndOfMessage"]


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_no_body_statuses(status: bytes) -> None:
    msg = b"HTTP/1.1 " + status + b"\r\nContent-Length: 10\r\n\r\n"
    assert kinds(responses(["GET", "GET"], msg + OK)) == [
        "ResponseHead",
        "EndOfMessage",
        "ResponseHead",
        "Body",
        "EndOfMessage",
    ]


def test_interim_100_continue_then_final() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n" + OK
    events = responses(["PUT"], data)
    assert kinds(events) == ["ResponseHead", "ResponseHead", "ResponseHead", "Body", "EndOfMessage"]
    first, second, final = events[0], events[1], events[2]
    assert isinstance(first, ResponseHead)
    assert first.interim
    assert first.status == 100
    assert isinstance(second, ResponseHead)
    assert second.interim
    assert isinstance(final, ResponseHead)
    assert not final.interim
    assert raw_of(events) == data


def test_101_switches_and_keeps_the_tunnel_bytes() -> None:
    parser = ResponseParser()
    parser.expect("GET")
    parser.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
    events = drain(parser)
    assert kinds(events) == ["ResponseHead", "Switched"]
    head = events[0]
    assert isinstance(head, ResponseHead)
    assert not head.interim
    assert not head.keep_alive
    assert parser.take_buffered() == b"\x81\x05hello"
    parser.feed(b"more")
    assert parser.next_event() is NEED_DATA


def test_connect_2xx_switches_but_an_error_does_not() -> None:
    assert kinds(responses(["CONNECT"], b"HTTP/1.1 200 OK\r\n\r\nraw")) == [
        "ResponseHead",
        "Switched",
    ]
    assert kinds(responses(["CONNECT"], b"HTTP/1.1 403 No\r\nContent-Length: 0\r\n\r\n")) == [
        "ResponseHead",
        "EndOfMessage",
    ]


def test_chunked_response() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    events = responses(["GET"], data)
    assert kinds(events) == ["ResponseHead", "Body", "EndOfMessage"]
    assert raw_of(events) == data


def test_close_delimited_response() -> None:
    data = b"HTTP/1.1 200 OK\r\n\r\nall of this until the end"
    events = responses(["GET"], data, eof=True)
    assert kinds(events) == ["ResponseHead", "Body", "EndOfMessage", "Closed"]
    head = events[0]
    assert isinstance(head, ResponseHead)
    assert not head.keep_alive
    assert raw_of(events) == data


def test_transfer_encoding_without_chunked_is_close_delimited() -> None:
    events = responses(["GET"], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", eof=True)
    assert kinds(events) == ["ResponseHead", "Body", "EndOfMessage", "Closed"]


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
    ],
)
def test_response_keep_alive(head: bytes, keep_alive: bool) -> None:
    event = responses(["GET"], head)[0]
    assert isinstance(event, ResponseHead)
    assert event.keep_alive is keep_alive


def test_status_without_reason() -> None:
    event = responses(["GET"], b"HTTP/1.1 204\r\n\r\n")[0]
    assert isinstance(event, ResponseHead)
    assert (event.status, event.reason) == (204, "")


def test_upstream_closing_before_answering() -> None:
    assert kinds(responses(["GET"], eof=True)) == ["Closed"]


@pytest.mark.parametrize(
    ("methods", "data", "reason"),
    [
        ([], b"HTTP/1.1 200 OK\r\n\r\n", "without a request"),
        (["GET"], b"HTTP/1.1 20 OK\r\n\r\n", "invalid status line"),
        (["GET"], b"HTTP/1.1 099 Low\r\n\r\n", "invalid status code"),
        (["GET"], b"SSH-2.0-OpenSSH\r\n\r\n", "invalid status line"),
        (["GET"], b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "invalid Content-Length"),
    ],
)
def test_malformed_responses(methods: list[str], data: bytes, reason: str) -> None:
    events = responses(methods, data)
    assert isinstance(events[-1], ParseError), events
    assert reason in events[-1].reason


def test_truncated_response_body_is_an_error() -> None:
    events = responses(["GET"], b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", eof=True)
    assert isinstance(events[-1], ParseError)


# -- classifying the first bytes --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"", Verdict.NEED_MORE),
        (b"G", Verdict.NEED_MORE),
        (b"GET", Verdict.NEED_MORE),
        (b"GET /", Verdict.NEED_MORE),
        (b"GET / HTTP/1.", Verdict.NEED_MORE),
        (b"GET / HTTP/1.1\r", Verdict.NEED_MORE),
        (b"GET / HTTP/1.1\r\n", Verdict.YES),
        (b"\r\nPOST /x?y HTTP/1.0\r\nHost: a\r\n", Verdict.YES),
        (b"\r", Verdict.NEED_MORE),
        (b"OPTIONS * HTTP/1.1\r\n", Verdict.YES),
        (b"\x16\x03\x01\x02\x00", Verdict.NO),  # TLS ClientHello
        (b"SSH-2.0-OpenSSH_9.6\r\n", Verdict.NO),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Verdict.NO),
        (b"GET / HTTP/2", Verdict.NO),
        (b"GET / FTP/1.1\r\n", Verdict.NO),
        (b" GET / HTTP/1.1\r\n", Verdict.NO),
        (b"GET  / HTTP/1.1\r\n", Verdict.NO),
        (b"GET /\x00 HTTP/1.1\r\n", Verdict.NO),
        (b"A" * 40, Verdict.NO),  # no method is this long
        (b"\x00\x00\x00\x0c", Verdict.NO),
    ],
)
def test_looks_like_http1(data: bytes, verdict: Verdict) -> None:
    assert looks_like_http1(data) is verdict


def test_long_target_gives_up_at_the_limit() -> None:
    assert looks_like_http1(b"GET /" + b"a" * 100, max_line=200) is Verdict.NEED_MORE
    assert looks_like_http1(b"GET /" + b"a" * 300, max_line=200) is Verdict.NO


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"", Verdict.NEED_MORE),
        (b"PRI * HTTP/2.0\r\n", Verdict.NEED_MORE),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Verdict.YES),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", Verdict.YES),
        (b"PRI * HTTP/1.1\r\n", Verdict.NO),
        (b"GET / HTTP/1.1\r\n", Verdict.NO),
    ],
)
def test_is_h2c_preface(data: bytes, verdict: Verdict) -> None:
    assert is_h2c_preface(data) is verdict


# -- properties -------------------------------------------------------------------------

_name = st.sampled_from(["Host", "X-Dev", "Accept", "x-a"])
_value = st.text(alphabet="abc XYZ=/;", max_size=12).map(str.strip)
_headers = st.lists(st.tuples(_name, _value), max_size=4)
_payload = st.binary(max_size=80)


@st.composite
def request_bytes(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    target = draw(st.sampled_from(["/", "/a/b?c=d", "*", "http://h/x"]))
    head = f"{method} {target} HTTP/1.1\r\n".encode()
    head += b"".join(f"{k}: {v}\r\n".encode() for k, v in draw(_headers))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    if framing == "none":
        return head + b"\r\n"
    if framing == "length":
        body = draw(_payload)
        return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    chunks = draw(st.lists(st.binary(min_size=1, max_size=30), max_size=4))
    body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
    trailer = b"X-T: 1\r\n" if draw(st.booleans()) else b""
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n" + trailer + b"\r\n"


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@settings(max_examples=150)
@given(st.lists(request_bytes(), min_size=1, max_size=4), st.lists(st.integers(0, 10_000)))
def test_split_points_do_not_change_request_events(messages: list[bytes], cuts: list[int]) -> None:
    data = b"".join(messages)
    whole = requests(data, eof=True)
    assert raw_of(whole) == data
    assert kinds(whole).count("EndOfMessage") == len(messages)
    assert whole[-1] == Closed()
    assert requests(*_split(data, cuts), eof=True) == whole


@st.composite
def response_bytes(draw: st.DrawFn) -> tuple[str, bytes]:
    method = draw(st.sampled_from(["GET", "HEAD", "PUT"]))
    status = draw(st.sampled_from([200, 204, 304, 404, 500]))
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" if draw(st.booleans()) else b""
    head = interim + f"HTTP/1.1 {status} X\r\n".encode()
    head += b"".join(f"{k}: {v}\r\n".encode() for k, v in draw(_headers))
    body = draw(_payload)
    has_body = method != "HEAD" and status not in (204, 304)
    if draw(st.booleans()):
        return method, head + f"Content-Length: {len(body)}\r\n\r\n".encode() + (
            body if has_body else b""
        )
    chunked = b"" if not body else f"{len(body):x}\r\n".encode() + body + b"\r\n"
    return method, head + b"Transfer-Encoding: chunked\r\n\r\n" + (
        chunked + b"0\r\n\r\n" if has_body else b""
    )


@settings(max_examples=150)
@given(st.lists(response_bytes(), min_size=1, max_size=4), st.lists(st.integers(0, 10_000)))
def test_split_points_do_not_change_response_events(
    exchanges: list[tuple[str, bytes]], cuts: list[int]
) -> None:
    methods = [m for m, _ in exchanges]
    data = b"".join(d for _, d in exchanges)
    whole = responses(methods, data, eof=True)
    assert raw_of(whole) == data
    assert kinds(whole).count("EndOfMessage") == len(exchanges)
    assert responses(methods, *_split(data, cuts), eof=True) == whole


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=6), st.booleans())
def test_random_bytes_never_raise(data: bytes, cuts: list[int], eof: bool) -> None:
    for prefix in (b"", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"):
        events = requests(*_split(prefix + data, cuts), eof=eof)
        errors = [i for i, e in enumerate(events) if isinstance(e, ParseError)]
        if errors:  # an error is final: only the same error again after it
            assert set(events[errors[0] :]) == {events[errors[0]]}
    for prefix in (b"", b"HTTP/1.1 200 OK\r\n"):
        responses(["GET", "HEAD"], *_split(prefix + data, cuts), eof=eof)
    looks_like_http1(data)
    is_h2c_preface(data)


@settings(max_examples=100)
@given(request_bytes())
def test_every_prefix_of_a_request_classifies_consistently(message: bytes) -> None:
    line_end = message.index(b"\r\n") + 2
    for n in range(len(message) + 1):
        verdict = looks_like_http1(message[:n])
        assert verdict is (Verdict.YES if n >= line_end else Verdict.NEED_MORE)
