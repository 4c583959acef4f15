"""Restartable watches of Kubernetes objects (the I/O around core.watchcache).

`Watch.run()` lists, then watches from the list's resourceVersion with bookmarks, and
keeps doing so until cancelled: a stream that ends (the server's `timeoutSeconds`) is
watched again from the last version seen, a 410 Gone lists again, and any other failure
(the API server unreachable, 5xx, a 403 from missing RBAC, garbage on the stream) waits
a bounded backoff and tries again, logging each new reason once and a recovery once. A
stream that ends at once with nothing in it counts as a failure (something between cuts
it), so the shell never spins on watch requests.

Every request has deadlines: connecting, and reading (a stream that stays silent longer
than the server's own timeout plus a margin is dead and is dropped). The objects stay
JSON dicts: the handler gets the changes and the cache after every list and event.

Requests go through the generated list functions with `_preload_content=False`, so the
client neither deserializes into models nor buffers the stream, and no Watch helper of
kubernetes-asyncio is used (it makes an ApiClient of its own and retries 410 itself).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from kubepresence.manager.core.watchcache import (
    Change,
    Step,
    WatchCache,
    WatchExpiredError,
    WatchFailedError,
    WatchProtocolError,
)
from kubepresence.manager.k8s.errors import GONE, KubernetesError, api_errors, api_exception
from kubepresence.protocol.backoff import Backoff

log = logging.getLogger(__name__)

SERVER_TIMEOUT = 300  # seconds the API server keeps a watch open before ending it
CONNECT_TIMEOUT = 10.0
READ_MARGIN = 30.0  # silence beyond the server timeout: the stream is dead
LIST_TIMEOUT = 60.0
MAX_LINE = 64 * 1024 * 1024  # one event is one JSON line; big objects exist
QUICK_END = 1.0  # an empty stream that ends sooner was not ended by the server's timeout
RETRY_FIRST, RETRY_LIMIT = 1.0, 30.0  # seconds between failed requests: doubling, capped

ListCall = Callable[..., Awaitable[Any]]
Handler = Callable[[list[Change], WatchCache], None]


class Watch:
    """One kind of object in one scope (a namespace, or all), kept in a WatchCache."""

    def __init__(
        self,
        what: str,
        list_call: ListCall,
        handle: Handler,
        *,
        cache: WatchCache | None = None,
        backoff: Backoff | None = None,
        server_timeout: int = SERVER_TIMEOUT,
        read_margin: float = READ_MARGIN,
        give_up_on: frozenset[int] = frozenset(),
        **params: Any,
    ) -> None:
        """`list_call`: a generated list function (e.g. CoreV1Api.list_namespaced_pod)
        with `params` (namespace, label_selector …); `what` names it in logs. An API
        status in `give_up_on` (e.g. 403: no RBAC for it) ends `run` with the error."""
        self.what = what
        self.cache = cache if cache is not None else WatchCache()
        self._list_call = list_call
        self._handle = handle
        self._backoff = backoff or Backoff(first=RETRY_FIRST, limit=RETRY_LIMIT)
        self._server_timeout = server_timeout
        self._read_margin = read_margin
        self._give_up_on = give_up_on
        self._params = params
        self.lists = 0  # how many lists and watch requests were made (tests, logs)
        self.watches = 0

    async def run(self) -> None:
        """Follow the objects until cancelled (or a `give_up_on` status: raised)."""
        while True:
            try:
                if self.cache.next_step() is Step.LIST:
                    await self._list()
                else:
                    await self._watch()
                # The stream ended by itself (server timeout): watch on from the version.
            except WatchExpiredError as error:
                log.info("watch of %s: version expired (%s); listing again", self.what, error)
            except KubernetesError as error:
                if error.api_status in self._give_up_on:
                    raise
                await self._failed(str(error))
            except (WatchFailedError, WatchProtocolError) as error:
                await self._failed(str(error))

    async def _failed(self, reason: str) -> None:
        delay, news = self._backoff.failed(reason)
        if news:
            log.warning("watch of %s failed: %s; retrying (backoff up to %.0f s)",
                        self.what, reason, self._backoff.limit)  # fmt: skip
        await asyncio.sleep(delay)

    def _succeeded(self) -> None:
        if self._backoff.succeeded():
            log.info("watch of %s works again", self.what)

    async def _request(self, doing: str, limits: aiohttp.ClientTimeout, **params: Any) -> Any:
        """The raw response of one list or watch request; errors translated."""
        with api_errors(doing):
            response = await self._list_call(
                **self._params, **params, _preload_content=False, _request_timeout=limits
            )
            if 200 <= response.status < 300:
                return response
            body = await response.read()
            response.release()
            raise api_exception(response.status, response.reason, body)

    async def _list(self) -> None:
        self.lists += 1
        doing = f"cannot list {self.what}"
        response = await self._request(doing, aiohttp.ClientTimeout(total=LIST_TIMEOUT))
        try:
            with api_errors(doing):
                body = await response.read()
        finally:
            response.release()
        try:
            listed = json.loads(body)
        except ValueError as error:
            raise WatchProtocolError(f"{doing}: the answer is not JSON") from error
        if not isinstance(listed, dict):
            raise WatchProtocolError(f"{doing}: the answer is not a list")
        changes = self.cache.listed(listed)
        self._succeeded()
        log.info(
            "listed %s: %d objects at version %s",
            self.what,
            len(self.cache),
            self.cache.resource_version,
        )
        self._handle(changes, self.cache)

    async def _watch(self) -> None:
        self.watches += 1
        doing = f"cannot watch {self.what}"
        timeout = aiohttp.ClientTimeout(
            connect=CONNECT_TIMEOUT,
            sock_connect=CONNECT_TIMEOUT,
            sock_read=self._server_timeout + self._read_margin,
        )
        try:
            response = await self._request(
                doing,
                timeout,
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=self.cache.resource_version,
                timeout_seconds=self._server_timeout,
            )
        except KubernetesError as error:
            if error.api_status == GONE:
                self.cache.expired()
                raise WatchExpiredError(error.message) from error
            raise
        loop = asyncio.get_running_loop()
        started, events = loop.time(), 0
        try:
            while True:
                try:
                    with api_errors(doing):
                        line = await response.content.readline(max_line_length=MAX_LINE)
                except HttpProcessingError as error:  # a line longer than MAX_LINE
                    raise WatchProtocolError(f"{doing}: {error}") from error
                if not line:
                    if not events and loop.time() - started < QUICK_END:
                        # Not the server's timeout: something cuts the stream at once.
                        # Back off rather than spin on watch requests.
                        raise WatchProtocolError(f"{doing}: the stream ended at once, empty")
                    return  # the server ended the watch: watch on from the version
                if not line.strip():
                    continue
                events += 1
                try:
                    event = json.loads(line)
                except ValueError as error:
                    raise WatchProtocolError(f"{doing}: an event is not JSON") from error
                if not isinstance(event, dict):
                    raise WatchProtocolError(f"{doing}: an event is not an object")
                changes = self.cache.event(event)
                self._succeeded()
                if changes:
                    self._handle(changes, self.cache)
        finally:
            response.release()
