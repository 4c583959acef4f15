"""The destination an egress dial names, checked before the agent dials it."""

from __future__ import annotations

import pytest

from kubepresence.agent.rpc.flows import destination_of
from kubepresence.protocol.gen import common


def connection(protocol: common.Protocol, ip: bytes, port: int) -> common.ConnectionId:
    return common.ConnectionId(protocol=protocol, destination_ip=ip, destination_port=port)


def test_tcp_udp_ipv4_and_ipv6_destinations() -> None:
    assert destination_of(connection(common.Protocol.TCP, bytes([127, 0, 0, 1]), 80)) == (
        "127.0.0.1",
        80,
        False,
    )
    assert destination_of(connection(common.Protocol.UDP, bytes(15) + b"\x01", 53)) == (
        "::1",
        53,
        True,
    )


@pytest.mark.parametrize(
    ("dialled", "reason"),
    [
        (None, "no connection"),
        (connection(common.Protocol.UNSPECIFIED, bytes([127, 0, 0, 1]), 80), "TCP or UDP"),
        (connection(common.Protocol.TCP, bytes([127, 0, 0, 1]), 0), "out of range"),
        (connection(common.Protocol.TCP, bytes([127, 0, 0, 1]), 70000), "out of range"),
        (connection(common.Protocol.TCP, bytes([1, 2, 3]), 80), "does not appear"),
    ],
)
def test_bad_destinations_are_refused(dialled: common.ConnectionId | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        destination_of(dialled)
