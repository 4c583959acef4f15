"""An h2 request's header list seen as the head `choose` decides on."""

from __future__ import annotations

from kubepresence.agent.core.h2c import request_head
from kubepresence.protocol.httpfilter import HttpFilter, matches


def test_request_head_from_h2_headers() -> None:
    head = request_head(
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"svc:8080"),
            (b":path", b"/api/v1?x=1"),
            (b"x-dev", b"alice"),
            (b"accept", b"*/*"),
        ]
    )
    assert (head.method, head.target, head.version) == ("POST", "/api/v1?x=1", "HTTP/2")
    assert head.headers == (("host", "svc:8080"), ("x-dev", "alice"), ("accept", "*/*"))
    assert head.raw == b""
    assert not head.upgrade
    assert matches(
        HttpFilter(headers=(("x-dev", "alice"),), path_prefix="/api/", method="post"),
        head.method,
        head.target,
        head.headers,
    )


def test_str_headers_and_an_explicit_host() -> None:
    head = request_head([(":method", "GET"), (":authority", "a"), (":path", "/"), ("host", "b")])
    assert head.headers == (("host", "b"),)


def test_connect_has_no_path() -> None:
    head = request_head([(b":method", b"CONNECT"), (b":authority", b"db:5432")])
    assert (head.method, head.target) == ("CONNECT", "*")
    assert head.upgrade


def test_latin1_bytes_never_fail() -> None:
    head = request_head([(b":method", b"GET"), (b":path", b"/\xff"), (b"x-v", b"\xe9")])
    assert head.target == "/\xff"
    assert head.header("x-v") == "\xe9"
