"""Serving a daemon's JSON calls (see `jsoncalls`) with its own gRPC servicers.

A call is decoded into the method's request message, handed to the servicer's gRPC
handler on a one-message stream (so the answer, and every error rule of `transport`, are
the gRPC call's own), and the reply goes back in protobuf's JSON mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import betterproto2
from grpclib.const import Cardinality, Handler
from grpclib.exceptions import GRPCError

from kubepresence.protocol import jsoncalls
from kubepresence.protocol.transport import peer_uid, remove_stale_socket, translated

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0  # a client that sends its request this slowly is not the CLI
CALL_TIMEOUT = 30.0  # `list` asks the API server; nothing served here takes longer


def message_dict(message: betterproto2.Message) -> dict[str, Any]:
    """A message as the JSON calls carry it: protobuf's JSON mapping, with the .proto's
    field names and every field present."""
    return message.to_dict(casing=betterproto2.Casing.SNAKE, include_default_values=True)


class _OneMessage:
    """The part of grpclib's server Stream a unary handler uses."""

    def __init__(self, request: betterproto2.Message) -> None:
        self._request: betterproto2.Message | None = request
        self.reply: betterproto2.Message | None = None

    async def recv_message(self) -> betterproto2.Message | None:
        request, self._request = self._request, None
        return request

    async def send_message(self, message: betterproto2.Message) -> None:
        self.reply = message


def served_handlers(services: Collection[Any], paths: Collection[str]) -> dict[str, Handler]:
    """The unary handlers at `paths` among the services' methods; ValueError names one
    that is missing or streams (a typo in `jsoncalls` must not pass start-up)."""
    mapping: dict[str, Handler] = {}
    for service in services:
        mapping.update(service.__mapping__())
    handlers = {}
    for path in paths:
        handler = mapping.get(path)
        if handler is None or handler.cardinality is not Cardinality.UNARY_UNARY:
            raise ValueError(f"no unary method {path} to serve in JSON")
        handlers[path] = handler
    return handlers


async def answer_call(handlers: dict[str, Handler], path: str, body: bytes) -> bytes:
    """The whole response to one call."""
    handler = handlers.get(path)
    if handler is None:
        return jsoncalls.error_answer("unimplemented", f"{path} is not served in JSON here")
    try:
        parsed = handler.request_type.from_dict(jsoncalls.parse_body(body))
        # from_dict takes a field's value as it comes ({"namespace": 7}); the wire form
        # has types: what does not encode is no request of this method.
        request = handler.request_type.parse(bytes(parsed))
    except jsoncalls.BadRequestError as bad:
        return jsoncalls.error_answer(bad.code, bad.message)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        return jsoncalls.error_answer("invalid_argument", f"not a request of {path}: {error}")
    stream = _OneMessage(request)
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            await translated(handler.func)(stream)  # type: ignore[arg-type]
    except GRPCError as error:
        return jsoncalls.error_answer(error.status.name.lower(), error.message or "")
    except TimeoutError:
        return jsoncalls.error_answer("deadline_exceeded", f"no answer within {CALL_TIMEOUT} s")
    if stream.reply is None:
        return jsoncalls.error_answer("internal", f"{path} sent no reply")
    return jsoncalls.answer(200, message_dict(stream.reply))


class JsonCalls:
    """The JSON calls server of one daemon (started by `serve_json_calls`)."""

    def __init__(self, handlers: dict[str, Handler], allowed_uids: Collection[int] | None):
        self._handlers = handlers
        self._allowed_uids = allowed_uids

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or stalled: nobody to answer
        except asyncio.LimitOverrunError:
            with contextlib.suppress(ConnectionError):
                writer.write(jsoncalls.error_answer("resource_exhausted", "request head too long"))
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._allowed_uids is not None:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock) if sock is not None else -1
            if uid not in self._allowed_uids:
                log.warning("refused a JSON call from uid %d", uid)
                writer.write(
                    jsoncalls.error_answer("permission_denied", "this socket serves another user")
                )
                await writer.drain()
                return
        async with asyncio.timeout(READ_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
            try:
                call = jsoncalls.parse_head(head)
            except jsoncalls.BadRequestError as bad:
                writer.write(
                    jsoncalls.answer(bad.status, {"code": bad.code, "message": bad.message})
                )
                await writer.drain()
                return
            body = await reader.readexactly(call.content_length)
        writer.write(await answer_call(self._handlers, call.path, body))
        await writer.drain()


async def serve_json_calls(
    services: Collection[Any],
    paths: Collection[str],
    path: Path,
    *,
    allowed_uids: Collection[int] | None = None,
    owner_uid: int | None = None,
) -> asyncio.Server:
    """Serve the methods at `paths` of `services` in JSON on the unix socket `path`, with
    the gRPC socket's rules: mode 0600, the owner's, and only `allowed_uids` may call."""
    server = JsonCalls(served_handlers(services, paths), allowed_uids)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    remove_stale_socket(path)
    old_umask = os.umask(0o177)
    try:
        listening = await asyncio.start_unix_server(
            server.handle, path=str(path), limit=jsoncalls.MAX_HEAD
        )
    finally:
        os.umask(old_umask)
    if owner_uid is not None:
        os.chown(path, owner_uid, -1)
    log.info("serving JSON calls on %s", path)
    return listening


async def close_json_calls(server: asyncio.Server, path: Path) -> None:
    server.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3.0):
            await server.wait_closed()
    path.unlink(missing_ok=True)  # noqa: ASYNC240 - once, at shutdown
