"""Parsing --port LOCAL[:PORT]."""

from __future__ import annotations

import pytest

from kubepresence.cli.core.interceptflags import PortSpec, parse_port_spec
from kubepresence.protocol.errors import Category, KubepresenceError


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("8080", PortSpec(8080, "")),
        ("8080:http", PortSpec(8080, "http")),
        ("9000:8080", PortSpec(9000, "8080")),
        ("1:grpc-web", PortSpec(1, "grpc-web")),
    ],
)
def test_good_specs(text: str, spec: PortSpec) -> None:
    assert parse_port_spec(text) == spec


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "local port must be"),
        ("http", "local port must be"),
        ("0", "local port must be"),
        ("70000", "local port must be"),
        ("8080:0", "out of range"),
        ("8080:", "name the port"),
        ("8080:a_b", "not a port name"),
        ("8080:averyveryverylongname", "not a port name"),
    ],
)
def test_bad_specs(text: str, reason: str) -> None:
    with pytest.raises(KubepresenceError, match=reason) as caught:
        parse_port_spec(text)
    assert caught.value.category is Category.USER
