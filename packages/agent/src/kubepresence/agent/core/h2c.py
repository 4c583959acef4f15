"""What the router needs to know of an HTTP/2 request: its head, as HTTP/1.1 shows it.

`choose` decides on a `RequestHead` for either protocol, so an h2 request's header list
(pseudo-headers first, names already lower-case on the wire) is mapped onto one:
`:method` → method, `:path` → target (`*` when absent, as for CONNECT), `:authority` →
a `host` header unless the request carries one, the version "HTTP/2". Names and values
are decoded latin-1, like HTTP/1.1 heads. The frames themselves are the `h2` library's.
"""

from __future__ import annotations

from collections.abc import Iterable

from kubepresence.agent.core.http1 import RequestHead


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def request_head(headers: Iterable[tuple[bytes | str, bytes | str]]) -> RequestHead:
    """The head of an h2 request from its decoded header list."""
    pseudo: dict[str, str] = {}
    fields: list[tuple[str, str]] = []
    for raw_name, raw_value in headers:
        name, value = _text(raw_name).lower(), _text(raw_value)
        if name.startswith(":"):
            pseudo[name] = value
        else:
            fields.append((name, value))
    if ":authority" in pseudo and not any(name == "host" for name, _ in fields):
        fields.insert(0, ("host", pseudo[":authority"]))
    method = pseudo.get(":method", "")
    return RequestHead(
        method=method,
        target=pseudo.get(":path", "*"),
        version="HTTP/2",
        headers=tuple(fields),
        raw=b"",
        upgrade=method == "CONNECT",
    )
