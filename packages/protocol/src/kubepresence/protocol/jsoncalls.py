"""Unary calls in JSON over HTTP/1.1 on a unix socket: the daemons' second door.

Why: the CLI's everyday commands (`version`, `status`, `list`, run by people and by
prompts and scripts many times a minute) must answer in a blink, and a fresh Python
process pays ~130 ms only to import the gRPC stack (asyncio, grpclib, h2, betterproto2,
the generated code). So each daemon also answers a few read-only unary methods of its
gRPC services in the unary JSON form of the Connect protocol (connectrpc.com), and the
CLI asks them with the standard library alone:

    POST /kubepresence.connector.Connector/Status HTTP/1.1
    Content-Type: application/json
    Content-Length: 2

    {}

The answer is `200` with the reply message in protobuf's JSON mapping (field names as in
the .proto, every field present: enums by name, 64-bit integers as strings, unset
messages as null), or an error status with `{"code": "not_found", "message": "..."}`
(the gRPC status name in lower case). The method is answered by the gRPC servicer itself
(`jsonserving`), so the .proto stays the one contract. One call per connection.

This module is the contract and its sans-IO halves (a request head parsed, an answer
built, a response read) plus the blocking client; it imports nothing the CLI's quick
commands would not need.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepresence.protocol.errors import Category, KubepresenceError, from_status_name

# The methods served in JSON, by their gRPC paths. Read-only, quick ones only: what the
# CLI's quick commands ask (the daemons check at start that each one exists).
USERD_VERSION = "/kubepresence.connector.Connector/Version"
USERD_STATUS = "/kubepresence.connector.Connector/Status"
USERD_LIST = "/kubepresence.connector.Connector/List"
ROOTD_VERSION = "/kubepresence.daemon.Daemon/Version"
USERD_CALLS = frozenset({USERD_VERSION, USERD_STATUS, USERD_LIST})
ROOTD_CALLS = frozenset({ROOTD_VERSION})

CONTENT_TYPE = "application/json"
MAX_HEAD = 16 * 1024  # bytes of request line and headers
MAX_BODY = 1024 * 1024  # bytes of a request message; the answers here are small too
MAX_ANSWER = 64 * 1024 * 1024  # a client's bound on what it reads back (a long `list`)

# Connect's HTTP status for each code; anything else is 500.
_HTTP_STATUS = {
    "canceled": 499,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "unavailable": 503,
    "unauthenticated": 401,
}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class BadRequestError(Exception):
    """The peer did not speak this protocol: answered with `status` and `code`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CallHead:
    """A request's line and the headers that matter."""

    path: str  # the gRPC method path, e.g. USERD_STATUS
    content_length: int


def parse_head(head: bytes) -> CallHead:
    """The head of a request (up to and including the blank line), or BadRequestError."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequestError(400, "invalid_argument", "the request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequestError(
            400, "invalid_argument", f"not an HTTP/1.x request line: {lines[0]!r}"
        )
    verb, path, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequestError(400, "invalid_argument", f"not a header line: {line!r}")
        headers[name.lower()] = value.strip()
    if verb != "POST":
        raise BadRequestError(405, "unimplemented", f"{verb} is not a call: POST the request")
    if "transfer-encoding" in headers:
        raise BadRequestError(411, "invalid_argument", "send the request with a Content-Length")
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media != CONTENT_TYPE:
        raise BadRequestError(415, "invalid_argument", f"the request must be {CONTENT_TYPE}")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise BadRequestError(400, "invalid_argument", f"bad Content-Length {length_text!r}")
    length = int(length_text)
    if length > MAX_BODY:
        raise BadRequestError(413, "resource_exhausted", f"a request is at most {MAX_BODY} bytes")
    return CallHead(path, length)


def parse_body(body: bytes) -> dict[str, Any]:
    """The request message as a JSON object (an empty body is the empty message)."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise BadRequestError(400, "invalid_argument", f"the body is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise BadRequestError(400, "invalid_argument", "the body must be a JSON object")
    return value


def answer(status: int, body: dict[str, Any]) -> bytes:
    """A whole response: `status`, the JSON body, and the end of the connection."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload


def error_answer(code: str, message: str) -> bytes:
    return answer(_HTTP_STATUS.get(code, 500), {"code": code, "message": message})


def request(path: str, message: dict[str, Any]) -> bytes:
    """A whole request for the method at `path`."""
    payload = json.dumps(message, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\n"
        "Host: localhost\r\n"
        f"Content-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + payload


def read_answer(data: bytes, what: str) -> dict[str, Any]:
    """The reply message of a whole response, or the error it carries as a
    KubepresenceError of its category (`what` names the daemon in messages)."""
    head, separator, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if not separator or len(parts) < 2 or not parts[1].isdigit():
        raise KubepresenceError(f"{what} sent no answer", Category.INTERNAL)
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise KubepresenceError(f"{what} answered {status_line!r} without JSON", Category.INTERNAL)
    if parts[1] == "200":
        return value
    raise from_status_name(str(value.get("code", "unknown")), str(value.get("message", "")))


def call(
    socket_path: Path, path: str, message: dict[str, Any], *, timeout: float, what: str
) -> dict[str, Any]:
    """Ask the daemon at `socket_path` the method at `path`, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(request(path, message))
            sock.shutdown(socket.SHUT_WR)
            chunks: list[bytes] = []
            size = 0
            while chunk := sock.recv(256 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise KubepresenceError(f"{what} sent too long an answer", Category.INTERNAL)
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            raise KubepresenceError(
                f"{what} does not answer (nothing within {timeout:g} s)", Category.INTERNAL
            ) from None
        except OSError as error:
            raise KubepresenceError(
                f"{what} does not answer ({error.strerror or error})", Category.INTERNAL
            ) from None
    return read_answer(b"".join(chunks), what)
