"""The preview gateway: an HTTP server in the manager that serves preview URLs.

See core.previews for the rules. aiohttp (already the manager's webhook server) both
serves and forwards; bodies stream both ways, never held whole in memory.

The ingress of a preview is the user's own service inside the cluster. With
`--ingress-tls` the gateway speaks TLS to it without checking its certificate: in-cluster
ingresses mostly carry certificates for their public names, not for the service name the
gateway dials, and the gateway adds no secret a fake ingress could steal beyond the
preview's own header.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web

from kubepresence.manager.core.previews import (
    Preview,
    downstream_headers,
    split_target,
    upstream_headers,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
CHUNK = 64 * 1024


class PreviewGateway:
    def __init__(self, lookup: Callable[[str], Preview | None]) -> None:
        self._lookup = lookup
        self._client: aiohttp.ClientSession | None = None

    async def start(self, host: str, port: int) -> web.AppRunner:
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_cleanup.append(self._close_client)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("preview gateway on %s:%d", host, port)
        return runner

    async def _close_client(self, _app: web.Application) -> None:
        if self._client is not None:
            await self._client.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        token, rest = split_target(request.raw_path)
        preview = self._lookup(token) if token else None
        if preview is None:
            return web.Response(
                status=404,
                text=f"no preview {token!r}: the intercept ended, or the link is wrong\n",
            )
        client = request.remote or ""
        headers = upstream_headers(request.headers.items(), preview, client)
        url = preview.ingress.origin + rest
        response: web.StreamResponse | None = None
        try:
            async with self._client.request(
                request.method,
                url,
                headers=headers,
                data=request.content if request.can_read_body else None,
                allow_redirects=False,
                ssl=False,  # plain HTTP, or TLS without a certificate check (see above)
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name, value in downstream_headers(upstream.headers.items(), preview):
                    response.headers.add(name, value)
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError) as error:
            log.info("preview %s: %s %s failed: %r", token, request.method, url, error)
            if response is not None and response.prepared:
                raise  # the head is out: only closing the connection can tell the browser
            return web.Response(
                status=502, text=f"the preview's ingress {preview.ingress.origin} failed: {error}\n"
            )
