"""Preview URLs: a link that shows one developer's personal intercept inside the cluster.

`intercept … --preview-url --ingress-host H --ingress-port P` asks the manager for a
preview. The manager's preview gateway then serves `/<token>/<rest>` by sending
`<rest>` to the ingress H:P (the entry of the user's own request path: a frontend, an
ingress controller) with the intercept's selecting header added. Whatever the request
passes through on its way, the header travels with it (propagating it is the app's job,
as with any tracing header), so the personal intercept takes it at the workload.

Path-based tokens need no DNS: the URL works from any pod as
`http://kubepresence-manager.<namespace>:<port>/<token>/`. Redirects the ingress sends to
its own absolute paths get the token prefix back, so a browser stays in the preview.

Plain data and decisions; the gateway (previewing.py) does the I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from kubepresence.protocol.errors import UserError

TOKEN_BYTES = 9  # 12 URL-safe characters: unguessable enough for a link shared in a team

# Hop-by-hop headers (RFC 9110 §7.6.1) end at the gateway; Host is the ingress's own.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)


@dataclass(frozen=True)
class Ingress:
    host: str
    port: int
    tls: bool = False

    @property
    def origin(self) -> str:
        scheme = "https" if self.tls else "http"
        default = 443 if self.tls else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{scheme}://{self.host}{port}"

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Preview:
    token: str
    intercept_id: str
    ingress: Ingress
    header: tuple[str, str]  # the selecting header the gateway adds


def check_ingress(host: str, port: int) -> None:
    """UserError for an ingress the gateway could not address."""
    if not host or any(c in host for c in "/ ?#@") or host.startswith("-"):
        raise UserError(f"--ingress-host {host!r} is not a host name or address")
    if not 0 < port < 65536:
        raise UserError(f"--ingress-port {port} is out of range")


class PreviewRegistry:
    def __init__(self) -> None:
        self._by_token: dict[str, Preview] = {}

    def add(
        self,
        intercept_id: str,
        ingress: Ingress,
        header: tuple[str, str],
        token: str | None = None,
    ) -> Preview:
        check_ingress(ingress.host, ingress.port)
        token = token or secrets.token_urlsafe(TOKEN_BYTES)
        preview = Preview(token, intercept_id, ingress, header)
        self._by_token[token] = preview
        return preview

    def for_intercept(self, intercept_id: str) -> Preview | None:
        return next((p for p in self._by_token.values() if p.intercept_id == intercept_id), None)

    def drop_intercepts(self, intercept_ids: Iterable[str]) -> None:
        gone = set(intercept_ids)
        self._by_token = {t: p for t, p in self._by_token.items() if p.intercept_id not in gone}

    def get(self, token: str) -> Preview | None:
        return self._by_token.get(token)


def split_target(target: str) -> tuple[str, str]:
    """`/<token>/<rest>?q` → (token, `/<rest>?q`); an empty token when there is none."""
    if not target.startswith("/"):
        return "", target
    token, slash, rest = target[1:].partition("/")
    token, question, query = token.partition("?")
    if question:  # `/<token>?q`: the ingress's root with the query
        return token, "/?" + query
    return token, "/" + rest if slash else "/"


def upstream_headers(
    headers: Iterable[tuple[str, str]], preview: Preview, client: str
) -> list[tuple[str, str]]:
    """The request's headers as the ingress gets them: hop-by-hop ones and any copy of
    the selecting header dropped, Host set to the ingress, the selecting header added."""
    selector = preview.header[0].lower()
    kept = [
        (name, value)
        for name, value in headers
        if name.lower() not in _HOP_BY_HOP and name.lower() != selector
    ]
    forwarded_for = [v for n, v in kept if n.lower() == "x-forwarded-for"]
    kept = [(n, v) for n, v in kept if n.lower() != "x-forwarded-for"]
    chain = ", ".join([*forwarded_for, client]) if client else ", ".join(forwarded_for)
    return [
        ("Host", preview.ingress.host_header),
        *kept,
        *([("X-Forwarded-For", chain)] if chain else []),
        preview.header,
    ]


def downstream_headers(
    headers: Iterable[tuple[str, str]], preview: Preview
) -> list[tuple[str, str]]:
    """The response's headers as the browser gets them: hop-by-hop ones dropped (the
    gateway frames the body itself), redirects into the ingress kept inside the preview."""
    result = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in _HOP_BY_HOP or lowered == "content-length":
            continue
        if lowered == "location":
            value = rewrite_location(value, preview)
        result.append((name, value))
    return result


def rewrite_location(location: str, preview: Preview) -> str:
    """A redirect to the ingress's own path (absolute path, or its origin) stays in the
    preview; anything else (another site) is left alone."""
    origin = preview.ingress.origin
    if location.startswith(origin + "/") or location == origin:
        location = location[len(origin) :] or "/"
    if location.startswith("/") and not location.startswith("//"):
        return f"/{preview.token}{location}"
    return location
