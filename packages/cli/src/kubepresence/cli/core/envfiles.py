"""The intercepted app's environment, written for local tools: dotenv and JSON.

dotenv has no single standard. We write what docker compose, python-dotenv and the
Telepresence CLI all read back the same way: `KEY="value"` with the value in double quotes
and `\\`, `"`, `$` and newlines escaped (`\\\\`, `\\"`, `\\$`, `\\n`). `parse_dotenv` reads that
form (plus bare and single-quoted values) so the round trip is tested here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", '"': '"', "$": "$", "n": "\n", "r": "\r", "t": "\t"}


class EnvFileError(ValueError):
    """A dotenv text we cannot read, or a variable name we cannot write."""


def render_dotenv(env: Mapping[str, str]) -> str:
    lines = []
    for name in sorted(env):
        if not _NAME.match(name):
            raise EnvFileError(f"{name!r} cannot be written as a dotenv variable name")
        value = "".join(_ESCAPES.get(c, c) for c in env[name])
        lines.append(f'{name}="{value}"')
    return "".join(f"{line}\n" for line in lines)


def render_json(env: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(env.items())), indent=2, ensure_ascii=False) + "\n"


def parse_dotenv(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    # Only \n ends a line: str.splitlines would also split inside values at \x1e, \u2028…
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise EnvFileError(f"line {number}: expected NAME=value")
        env[name] = _value(value.strip(), number)
    return env


def _value(text: str, number: int) -> str:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise EnvFileError(f"line {number}: unterminated double quote")
        out, chars, i = [], text[1:-1], 0
        while i < len(chars):
            if chars[i] == "\\" and i + 1 < len(chars) and chars[i + 1] in _UNESCAPES:
                out.append(_UNESCAPES[chars[i + 1]])
                i += 2
            else:
                out.append(chars[i])
                i += 1
        return "".join(out)
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'"):
            raise EnvFileError(f"line {number}: unterminated single quote")
        return text[1:-1]
    return text.split(" #", 1)[0].rstrip()
