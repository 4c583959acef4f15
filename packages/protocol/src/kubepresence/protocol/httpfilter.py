"""HTTP filters of personal intercepts: which requests go to a workstation.

A personal intercept carries one `HttpFilter`. A request matches it when *every* part
given matches:

- each header `(name, value)`: the request has a header of that name (names compare
  case-insensitively) whose value is exactly `value` (after the surrounding whitespace the
  HTTP grammar allows is removed); a header repeated in the request matches when any of
  its occurrences does;
- `path_prefix`: the request's path starts with it (plain string prefix: `/api` also
  matches `/apiary`; write `/api/` to mean the directory);
- `path_equal`: the request's path is exactly it;
- `path_regex`: `re.search` finds the pattern in the path, as Telepresence does with Go's
  `regexp.MatchString`: the pattern is *not* anchored, so `^/api/v[0-9]+/` must say `^`
  (and `$`) itself when it means the whole path;
- `method`: the request's method, compared case-insensitively (`get` matches `GET`).

The path is the request target's path as sent on the wire, without the query string and
without percent-decoding; for an absolute-form target (`http://host/p?q`, sent to proxies)
it is the path part (`/p`). An asterisk-form target (`OPTIONS *`) has the path `*`.

Pure functions only: the CLI validates what the user typed, the manager describes filters
in `list`, the agent matches requests. Nothing here does I/O or knows generated types.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

AUTO_HEADER_NAME = "x-kubepresence-intercept-id"

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: field-value is VCHAR / obs-text with SP and HTAB inside, none at the ends.
_FIELD_VALUE = re.compile(
    r"(?:[\x21-\x7e\x80-\xff](?:[\x20\x09\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
)
# A path a request could carry: starts with '/', no whitespace or control characters.
_PATH = re.compile(r"/[^\x00-\x20\x7f]*")


@dataclass(frozen=True)
class HttpFilter:
    """What selects a personal intercept's requests; see the module docstring."""

    headers: tuple[tuple[str, str], ...] = ()
    path_prefix: str = ""
    path_equal: str = ""
    path_regex: str = ""
    method: str = ""


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def parse_header_option(text: str) -> tuple[str, str]:
    """`NAME=VALUE` as typed after `--http-header`: (lower-case name, value).

    The value may contain '=' (only the first one separates). `auto` is the caller's to
    handle (see `auto_header`); here it is an error like any text without '='.
    """
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--http-header {text!r}: expected NAME=VALUE (or auto)")
    if not is_token(name):
        raise ValueError(
            f"--http-header {text!r}: {name!r} is not a valid header name "
            "(letters, digits and !#$%&'*+-.^_`|~ only)"
        )
    _check_value(name, value)
    return name.lower(), value


def auto_header(intercept_name: str, session_id: str) -> tuple[str, str]:
    """A header only this intercept's requests carry: its session id and name.

    A session id is unique per connected workstation and an intercept name is unique in
    its session, so no two live intercepts get the same header.
    """
    value = f"{session_id}:{intercept_name}"
    _check_value(AUTO_HEADER_NAME, value)
    return AUTO_HEADER_NAME, value


def _check_value(name: str, value: str) -> None:
    if _FIELD_VALUE.fullmatch(value) is None:
        raise ValueError(
            f"header {name!r}: value {value!r} cannot be sent in HTTP "
            "(no control characters, no leading or trailing whitespace)"
        )


def validate(http_filter: HttpFilter) -> None:
    """Raise `ValueError` with one line saying what is wrong; return when usable."""
    f = http_filter
    if not (f.headers or f.path_prefix or f.path_equal or f.path_regex or f.method):
        raise ValueError("an HTTP filter needs at least one header, path or method")
    seen: set[str] = set()
    for name, value in f.headers:
        if not is_token(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if name.lower() in seen:
            raise ValueError(f"header {name.lower()!r} is given more than once")
        seen.add(name.lower())
        _check_value(name, value)
    if f.path_prefix and f.path_equal:
        raise ValueError("--http-path-equal and --http-path-prefix cannot be used together")
    if f.path_equal and f.path_regex:
        raise ValueError("--http-path-equal and --http-path-regex cannot be used together")
    for option, path in (
        ("--http-path-prefix", f.path_prefix),
        ("--http-path-equal", f.path_equal),
    ):
        if path and _PATH.fullmatch(path) is None:
            raise ValueError(
                f"{option} {path!r}: a path starts with '/' and has no spaces or control characters"
            )
    if f.path_regex:
        try:
            re.compile(f.path_regex)
        except re.error as error:
            raise ValueError(f"--http-path-regex {f.path_regex!r}: {error}") from None
    if f.method and not is_token(f.method):
        raise ValueError(f"--http-method {f.method!r} is not an HTTP method name")


def request_path(target: str) -> str:
    """The path of a request target, without the query: what path filters compare."""
    if not target.startswith("/") and "://" in target:  # absolute-form
        try:
            return urlsplit(target).path or "/"
        except ValueError:  # e.g. a broken IPv6 authority: no path to speak of
            return ""
    return target.split("?", 1)[0]


def matches(
    http_filter: HttpFilter, method: str, target: str, headers: Iterable[tuple[str, str]]
) -> bool:
    """Whether a request (method, request target, header list) matches every filter part."""
    f = http_filter
    if f.method and method.upper() != f.method.upper():
        return False
    if f.path_prefix or f.path_equal or f.path_regex:
        path = request_path(target)
        if f.path_prefix and not path.startswith(f.path_prefix):
            return False
        if f.path_equal and path != f.path_equal:
            return False
        if f.path_regex and re.search(f.path_regex, path) is None:
            return False
    if f.headers:
        present: dict[str, set[str]] = {}
        for name, value in headers:
            present.setdefault(name.lower(), set()).add(value.strip(" \t"))
        for name, value in f.headers:
            if value not in present.get(name.lower(), ()):
                return False
    return True


def describe(http_filter: HttpFilter) -> str:
    """One line for humans, e.g. `x-dev: alice, path prefix /api/, method GET`."""
    f = http_filter
    parts = [f"{name.lower()}: {value}" for name, value in f.headers]
    if f.path_prefix:
        parts.append(f"path prefix {f.path_prefix}")
    if f.path_equal:
        parts.append(f"path {f.path_equal}")
    if f.path_regex:
        parts.append(f"path matching {f.path_regex}")
    if f.method:
        parts.append(f"method {f.method.upper()}")
    return ", ".join(parts) or "every request"
