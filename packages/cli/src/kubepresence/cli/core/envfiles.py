"""The intercepted app's environment, written for local tools: dotenv, sh, docker and JSON.

Each syntax is written so that the tool of that syntax reads back every value exactly:

- `dotenv`, for python-dotenv (`dotenv_values`, `load_dotenv`, `dotenv run`, with their
  default interpolation): `NAME='value'`, in single quotes with `\\` and `'` escaped
  (`\\\\`, `\\'`). python-dotenv expands `${NAME}` and `${NAME:-default}` in every value,
  quoted or not, and has no escape for it; a `$` before `{` is written `${:-$}` (the
  variable with the empty name, which can never be set, so its default: `$`), and a
  value's last backslash `${:-\\}` (a quoted value cannot end in a backslash: it would
  escape the closing quote). A value with a carriage return is written in double quotes
  with `\\r` (a file read in text mode turns a bare CR into a newline). Names: what
  python-dotenv reads as a name (no `=`, `#`, quote or white space).
- `sh`, for `. FILE` in a POSIX shell: `export NAME='value'`, `'` written `'\\''`. Names
  must be shell names (`[A-Za-z_][A-Za-z0-9_]*`): a shell cannot set others.
- `docker`, for `docker run --env-file`: `NAME=value` per line, the value verbatim (docker
  has no quoting: it splits lines at `\\n` and drops a line's final `\\r`), so a value with a
  newline, or ending with a carriage return, cannot be written and is refused, naming it;
  so is a line longer than docker reads (64 KiB).
- `json`: one object, sorted by name.

A variable a syntax cannot carry raises `EnvFileError` naming the variable, before anything
is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

SYNTAXES = ("dotenv", "sh", "docker")

_DOTENV_NAME = re.compile(r"[^=#'\"\s]+\Z")
_SH_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z", re.ASCII)
# bufio.Scanner's MaxScanTokenSize: docker's reader fails on a longer line.
DOCKER_MAX_LINE = 64 * 1024


class EnvFileError(ValueError):
    """A variable that the chosen syntax cannot carry."""


def _dotenv_value(value: str) -> str:
    if "\r" in value:
        quote, escapes = '"', {"\\": "\\\\", '"': '\\"', "\r": "\\r"}
    else:
        quote, escapes = "'", {"\\": "\\\\", "'": "\\'"}
    out = []
    for i, char in enumerate(value):
        if char == "$" and value[i + 1 : i + 2] == "{":
            out.append("${:-$}")
        elif char == "\\" and i == len(value) - 1:
            out.append("${:-\\\\}")
        else:
            out.append(escapes.get(char, char))
    return f"{quote}{''.join(out)}{quote}"


def render_dotenv(env: Mapping[str, str]) -> str:
    lines = []
    for name in sorted(env):
        if not _DOTENV_NAME.match(name):
            raise EnvFileError(f"{name!r} cannot be written as a dotenv variable name")
        lines.append(f"{name}={_dotenv_value(env[name])}\n")
    return "".join(lines)


def render_sh(env: Mapping[str, str]) -> str:
    lines = []
    for name in sorted(env):
        if not _SH_NAME.match(name):
            raise EnvFileError(f"{name!r} cannot be written for sh: not a shell variable name")
        value = env[name].replace("'", "'\\''")
        lines.append(f"export {name}='{value}'\n")
    return "".join(lines)


def render_docker(env: Mapping[str, str]) -> str:
    lines = []
    for name in sorted(env):
        value = env[name]
        if not name or name[0] in "#\ufeff" or "=" in name or any(c.isspace() for c in name):
            raise EnvFileError(f"{name!r} cannot be written as a docker env-file variable name")
        if "\n" in value:
            raise EnvFileError(f"{name} has a newline, which docker's --env-file cannot carry")
        if value.endswith("\r"):
            raise EnvFileError(
                f"{name} ends with a carriage return, which docker's --env-file drops"
            )
        line = f"{name}={value}"
        if len(line.encode()) >= DOCKER_MAX_LINE:
            raise EnvFileError(f"{name} is longer than docker's --env-file reads (64 KiB a line)")
        lines.append(f"{line}\n")
    return "".join(lines)


def render_json(env: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(env.items())), indent=2, ensure_ascii=False) + "\n"


def renderer(syntax: str) -> Callable[[Mapping[str, str]], str]:
    """The renderer of an `--env-syntax` (one of SYNTAXES)."""
    renderers = {"dotenv": render_dotenv, "sh": render_sh, "docker": render_docker}
    try:
        return renderers[syntax]
    except KeyError:
        raise EnvFileError(
            f"unknown env syntax {syntax!r} (choose from {', '.join(SYNTAXES)})"
        ) from None
