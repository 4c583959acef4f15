"""Choosing the port-forward protocol from the caller's environment."""

from __future__ import annotations

import pytest

from kubepresence.protocol.errors import ConfigError
from kubepresence.userd.k8s.portforward import port_forward_protocol


@pytest.mark.parametrize(
    ("environment", "chosen"),
    [
        ({}, "auto"),
        ({"KUBEPRESENCE_PORT_FORWARD": ""}, "auto"),
        ({"KUBEPRESENCE_PORT_FORWARD": "SPDY"}, "spdy"),
        ({"KUBEPRESENCE_PORT_FORWARD": " websocket "}, "websocket"),
        ({"KUBEPRESENCE_PORT_FORWARD": "auto"}, "auto"),
    ],
)
def test_the_environment_chooses(environment: dict[str, str], chosen: str) -> None:
    assert port_forward_protocol(environment) == chosen


def test_an_unknown_protocol_is_one_clear_config_error() -> None:
    with pytest.raises(ConfigError, match=r"KUBEPRESENCE_PORT_FORWARD must be one of auto, spdy"):
        port_forward_protocol({"KUBEPRESENCE_PORT_FORWARD": "http3"})
