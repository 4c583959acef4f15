"""An HTTP filter on the wire: `httpfilter.HttpFilter` to and from the generated message.

One conversion for the CLI, the manager and the agent. Names are lower-cased and the
method upper-cased on the way in (both compare case-insensitively); an empty message is
no filter at all (a global intercept).
"""

from __future__ import annotations

from kubepresence.protocol.gen import common
from kubepresence.protocol.httpfilter import HttpFilter


def from_message(message: common.HttpFilter | None) -> HttpFilter | None:
    if message is None:
        return None
    http_filter = HttpFilter(
        headers=tuple((h.name.lower(), h.value) for h in message.headers),
        path_prefix=message.path_prefix,
        path_equal=message.path_equal,
        path_regex=message.path_regex,
        method=message.method.upper(),
    )
    return None if http_filter == HttpFilter() else http_filter


def to_message(http_filter: HttpFilter | None) -> common.HttpFilter | None:
    if http_filter is None:
        return None
    return common.HttpFilter(
        headers=[common.HeaderMatch(name=k, value=v) for k, v in http_filter.headers],
        path_prefix=http_filter.path_prefix,
        path_equal=http_filter.path_equal,
        path_regex=http_filter.path_regex,
        method=http_filter.method,
    )
