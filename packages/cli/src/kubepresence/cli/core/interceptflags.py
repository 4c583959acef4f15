"""`intercept`'s own options, parsed and checked before anything is applied. Sans-IO.

- `--port LOCAL[:PORT]`: where intercepted traffic goes, and which workload port it is.
  PORT is the name or number of a port of the Service that selects the workload (userd
  resolves it to the container port the agent takes over), or of the container port when
  no Service selects it. Without it ("" here) userd takes the Service's only port.
- The HTTP filter and preview of a personal intercept (`--http-*`, `--preview-url`).
- `--mount VALUE`: whether to mount the app's volumes, and where. `true` (the default) or
  an empty value: a fresh temporary directory that userd makes; `false`: no mount;
  anything else: a path (made absolute against the CLI's working directory, since userd
  runs elsewhere). userd checks the directory itself.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from kubepresence.protocol.errors import UserError
from kubepresence.protocol.httpfilter import HttpFilter, parse_header_option, validate

MAX_PORT = 65535
MAX_PORT_NAME = 15  # Kubernetes IANA_SVC_NAME


@dataclass(frozen=True)
class PortSpec:
    local: int
    remote: str


def parse_port_spec(text: str) -> PortSpec:
    local_text, _, remote = text.partition(":")
    if not local_text.isdigit() or not 0 < int(local_text) <= MAX_PORT:
        raise UserError(f"--port {text}: the local port must be a number from 1 to {MAX_PORT}")
    if not remote and text.endswith(":"):
        raise UserError(f"--port {text}: name the port after ':' or leave ':' out")
    if not remote:
        return PortSpec(int(local_text), "")
    if remote.isdigit():
        if not 0 < int(remote) <= MAX_PORT:
            raise UserError(f"--port {text}: port {remote} is out of range")
    elif not (0 < len(remote) <= MAX_PORT_NAME and remote.replace("-", "").isalnum()):
        raise UserError(f"--port {text}: {remote!r} is not a port name or number")
    return PortSpec(int(local_text), remote)


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


ROOT_VARIABLE = "KUBEPRESENCE_ROOT"  # where `-- CMD` finds the mounted volumes
_YES = frozenset({"true", "yes", "on", "1", ""})
_NO = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True)
class MountRequest:
    wanted: bool
    path: str = ""  # "": a temporary directory


def parse_mount(value: str, cwd: str) -> MountRequest:
    """`--mount` as given → what to ask userd for."""
    lowered = value.strip().lower()
    if lowered in _YES:
        return MountRequest(wanted=True)
    if lowered in _NO:
        return MountRequest(wanted=False)
    return MountRequest(wanted=True, path=posixpath.normpath(posixpath.join(cwd, value)))
