"""The webhook's HTTPS server: AdmissionReview v1 on /mutate-pods.

The decision is `core.injection.review`; this shell reads the body (bounded), answers
with its verdict and logs what it did. Any failure of its own still answers "allowed,
no patch": the webhook fails open, so a bug here never blocks a user's pods.
"""

from __future__ import annotations

import json
import logging
import ssl

from aiohttp import web

from kubepresence.manager.core.injection import InjectionSettings, Verdict, review

log = logging.getLogger(__name__)

PATH = "/mutate-pods"
MAX_BODY = 4 * 1024 * 1024  # the API server limits objects to about 1.5 MiB
SHUTDOWN_TIMEOUT = 3.0


def _answer(verdict: Verdict) -> web.Response:
    return web.json_response(verdict.response())


def _uid_of(body: bytes) -> str:
    """The review's uid, if it can be read at all (the API server matches answers by it)."""
    try:
        uid = json.loads(body)["request"]["uid"]
    except Exception:  # noqa: BLE001 - best effort on a body that already broke the core
        return ""
    return uid if isinstance(uid, str) else ""


def make_app(settings: InjectionSettings) -> web.Application:
    async def mutate(request: web.Request) -> web.Response:
        body = b""
        try:
            body = await request.read()
            verdict = review(body, settings)
        except Exception:
            log.exception("webhook failed; allowing the pod untouched")
            return _answer(Verdict(_uid_of(body), None, "internal error"))
        if verdict.patch is not None:
            log.info("injecting the agent (review %s)", verdict.uid)
        elif verdict.problem:
            log.warning("pod passes without the agent (review %s): %s", verdict.uid, verdict.reason)
        else:
            log.debug("pod passes untouched (review %s): %s", verdict.uid, verdict.reason)
        return _answer(verdict)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(PATH, mutate)
    return app


async def serve_webhook(
    settings: InjectionSettings, host: str, port: int, context: ssl.SSLContext
) -> web.AppRunner:
    """Start serving; the caller stops with `runner.cleanup()`."""
    runner = web.AppRunner(make_app(settings), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    log.info("webhook serving https://%s:%d%s", host, port, PATH)
    return runner
