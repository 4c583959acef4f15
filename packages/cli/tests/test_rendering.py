"""State rendered for people and for scripts."""

from __future__ import annotations

import json

import yaml

from kubepresence.cli.core.rendering import OutputFormat, render

STATE = {"client": "0.1.0", "user_daemon": {"running": True, "state": "connected"}, "cidrs": []}


def test_json_and_yaml_round_trip() -> None:
    assert json.loads(render(STATE, OutputFormat.JSON)) == STATE
    assert yaml.safe_load(render(STATE, OutputFormat.YAML)) == STATE


def test_text_is_aligned_and_nested() -> None:
    text = render(STATE, OutputFormat.TEXT)
    assert text.splitlines() == [
        "Client:      0.1.0",
        "User daemon:",
        "  Running: True",
        "  State:   connected",
        "Cidrs:       none",
    ]
