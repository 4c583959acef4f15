"""The HTTP filter of a personal intercept, from the `intercept` command's options."""

from __future__ import annotations

from collections.abc import Sequence

from kubepresence.protocol.errors import UserError
from kubepresence.protocol.httpfilter import HttpFilter, parse_header_option, validate

AUTO = "auto"


def wants_auto_header(headers: Sequence[str]) -> bool:
    return AUTO in headers


def filter_from_options(
    headers: Sequence[str],
    *,
    path_prefix: str = "",
    path_equal: str = "",
    path_regex: str = "",
    method: str = "",
    auto: tuple[str, str] | None = None,
) -> HttpFilter | None:
    """None without any filter option (a global intercept); UserError on bad input.

    `auto` is the generated header `--http-header auto` stands for (the caller makes it
    from the session id, which the workstation's user daemon knows).
    """
    parsed: list[tuple[str, str]] = []
    try:
        for text in headers:
            if text == AUTO:
                if auto is None:
                    raise UserError("--http-header auto needs a connected session")
                parsed.append(auto)
            else:
                parsed.append(parse_header_option(text))
        http_filter = HttpFilter(
            headers=tuple(parsed),
            path_prefix=path_prefix,
            path_equal=path_equal,
            path_regex=path_regex,
            method=method.upper(),
        )
        if http_filter == HttpFilter():
            return None
        validate(http_filter)
    except ValueError as error:
        raise UserError(str(error)) from None
    return http_filter
