"""Preview URLs: tokens, target splitting, header and redirect rewriting, and the gateway
forwarding real HTTP to a real ingress on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import socket

import aiohttp
import pytest
from aiohttp import web

from kubepresence.manager.core.previews import (
    Ingress,
    Preview,
    PreviewRegistry,
    check_ingress,
    downstream_headers,
    rewrite_location,
    split_target,
    upstream_headers,
)
from kubepresence.manager.net.previewing import PreviewGateway
from kubepresence.protocol.errors import UserError

HEADER = ("x-kubepresence-intercept-id", "client-1:echo")
PREVIEW = Preview("tok", "client-1:echo", Ingress("frontend.shop", 80), HEADER)


@pytest.mark.parametrize(
    ("target", "split"),
    [
        ("/tok/", ("tok", "/")),
        ("/tok", ("tok", "/")),
        ("/tok/a/b?x=1", ("tok", "/a/b?x=1")),
        ("/tok?x=1", ("tok", "/?x=1")),
        ("/", ("", "/")),
        ("*", ("", "*")),
    ],
)
def test_split_target(target: str, split: tuple[str, str]) -> None:
    assert split_target(target) == split


def test_registry_tokens_are_unique_and_end_with_their_intercept() -> None:
    registry = PreviewRegistry()
    one = registry.add("c:a", Ingress("web", 80), HEADER)
    two = registry.add("c:b", Ingress("web", 80), HEADER)
    assert one.token != two.token
    assert len(one.token) >= 12
    assert registry.get(one.token) == one
    assert registry.for_intercept("c:b") == two
    registry.drop_intercepts(["c:a"])
    assert registry.get(one.token) is None
    assert registry.get(two.token) == two


@pytest.mark.parametrize(("host", "port"), [("", 80), ("a/b", 80), ("web", 0), ("web", 70000)])
def test_bad_ingress_is_refused(host: str, port: int) -> None:
    with pytest.raises(UserError):
        check_ingress(host, port)


def test_upstream_headers_add_the_selector_and_drop_hop_by_hop() -> None:
    headers = upstream_headers(
        [
            ("Host", "kubepresence-manager.kp:8082"),
            ("Connection", "keep-alive"),
            ("X-Kubepresence-Intercept-Id", "someone-else"),
            ("Accept", "text/html"),
            ("X-Forwarded-For", "10.0.0.9"),
        ],
        PREVIEW,
        "10.1.0.5",
    )
    assert headers == [
        ("Host", "frontend.shop"),
        ("Accept", "text/html"),
        ("X-Forwarded-For", "10.0.0.9, 10.1.0.5"),
        HEADER,
    ]


def test_redirects_stay_in_the_preview() -> None:
    assert rewrite_location("/login", PREVIEW) == "/tok/login"
    assert rewrite_location("http://frontend.shop/next?a=1", PREVIEW) == "/tok/next?a=1"
    assert rewrite_location("http://frontend.shop", PREVIEW) == "/tok/"
    assert rewrite_location("https://example.org/x", PREVIEW) == "https://example.org/x"
    assert rewrite_location("//cdn.example.org/x", PREVIEW) == "//cdn.example.org/x"
    tls = Preview("t", "i", Ingress("web", 8443, tls=True), HEADER)
    assert rewrite_location("https://web:8443/a", tls) == "/t/a"
    assert downstream_headers(
        [("Location", "/a"), ("Transfer-Encoding", "chunked"), ("Content-Length", "3")], PREVIEW
    ) == [("Location", "/tok/a")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_gateway_forwards_to_the_ingress_with_the_header() -> None:
    seen: list[dict[str, str]] = []

    async def ingress_handler(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        if request.path == "/go":
            raise web.HTTPFound("/landed")
        body = await request.read()
        return web.json_response(
            {
                "path": request.path_qs,
                "method": request.method,
                "sha256": hashlib.sha256(body).hexdigest(),
                "header": request.headers.get(HEADER[0]),
            }
        )

    ingress_app = web.Application(client_max_size=64 * 1024 * 1024)
    ingress_app.router.add_route("*", "/{tail:.*}", ingress_handler)
    ingress_runner = web.AppRunner(ingress_app)
    await ingress_runner.setup()
    ingress_port, gateway_port = free_port(), free_port()
    await web.TCPSite(ingress_runner, "127.0.0.1", ingress_port).start()

    registry = PreviewRegistry()
    preview = registry.add("c:echo", Ingress("127.0.0.1", ingress_port), HEADER)
    gateway = await PreviewGateway(registry.get).start("127.0.0.1", gateway_port)
    base = f"http://127.0.0.1:{gateway_port}/{preview.token}"
    body = b"x" * (3 * 1024 * 1024 + 7)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/a/b?q=1") as response:
                answer = await response.json()
            assert answer == {
                "path": "/a/b?q=1",
                "method": "GET",
                "sha256": hashlib.sha256(b"").hexdigest(),
                "header": HEADER[1],
            }
            assert seen[-1]["Host"] == f"127.0.0.1:{ingress_port}"
            async with http.post(f"{base}/upload", data=body) as response:
                answer = await response.json()
            assert answer["sha256"] == hashlib.sha256(body).hexdigest()
            async with http.get(f"{base}/go", allow_redirects=False) as response:
                assert response.status == 302
                assert response.headers["Location"] == f"/{preview.token}/landed"
            async with http.get(f"http://127.0.0.1:{gateway_port}/nope/") as response:
                assert response.status == 404
                assert "no preview 'nope'" in await response.text()
            registry.drop_intercepts(["c:echo"])
            async with http.get(f"{base}/a") as response:
                assert response.status == 404
            dead = registry.add("c:dead", Ingress("127.0.0.1", free_port()), HEADER)
            async with http.get(f"http://127.0.0.1:{gateway_port}/{dead.token}/") as response:
                assert response.status == 502
                assert "failed" in await response.text()
    finally:
        await asyncio.wait_for(gateway.cleanup(), 5)
        await ingress_runner.cleanup()
