"""The HTTP filter and preview of a personal intercept, from `intercept`'s options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class PreviewOptions:
    ingress_host: str
    ingress_port: int  # 0: the scheme's default
    ingress_tls: bool


def preview_options(wanted: bool, host: str, port: int, tls: bool) -> PreviewOptions | None:
    """The preview `--preview-url` asks for; UserError when the options do not fit.

    A preview selects its requests by a header: without `--http-header` the caller adds
    `auto`.
    """
    if not wanted:
        if host or port or tls:
            raise UserError("--ingress-host/--ingress-port/--ingress-tls need --preview-url")
        return None
    if not host:
        raise UserError("--preview-url needs --ingress-host (the Service the preview enters)")
    if not 0 <= port < 65536:
        raise UserError(f"--ingress-port {port} is out of range")
    return PreviewOptions(host, port, tls)
