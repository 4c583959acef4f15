"""Turning state into text: `-o json|yaml` for scripts, aligned key/value lines for people."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any


class OutputFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    YAML = "yaml"


def render(data: Mapping[str, Any], fmt: OutputFormat) -> str:
    """Render nested dicts/lists of plain values in the chosen format."""
    if fmt is OutputFormat.JSON:
        return json.dumps(data, indent=2, sort_keys=False)
    if fmt is OutputFormat.YAML:
        import yaml  # here: text and JSON, the usual outputs, need not load it

        return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False).rstrip()
    return "\n".join(_text_lines(data, indent=0))


def _text_lines(data: Mapping[str, Any], indent: int) -> list[str]:
    width = max((len(_label(k)) for k in data), default=0)
    lines = []
    for key, value in data.items():
        label = _label(key)
        pad = " " * indent
        if isinstance(value, Mapping):
            lines.append(f"{pad}{label}:")
            lines.extend(_text_lines(value, indent + 2))
        elif isinstance(value, list):
            shown = ", ".join(str(v) for v in value) if value else "none"
            lines.append(f"{pad}{label + ':':<{width + 1}} {shown}")
        else:
            shown = "" if value is None else str(value)
            lines.append(f"{pad}{label + ':':<{width + 1}} {shown}")
    return lines


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()
