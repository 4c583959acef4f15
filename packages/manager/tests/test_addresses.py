"""Listen addresses and flow destinations."""

from __future__ import annotations

import pytest

from kubepresence.manager.core.addresses import destination, parse_listen_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:8081", ("0.0.0.0", 8081)), ("[::]:8081", ("::", 8081)), ("pod:1", ("pod", 1))],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["8081", ":8081", "host:0", "host:65536", "host:http"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|port must be"):
        parse_listen_address(text)


def test_destinations() -> None:
    assert destination(bytes([10, 96, 0, 10]), 53) == ("10.96.0.10", 53)
    assert destination(bytes(15) + b"\x01", 80) == ("::1", 80)
    with pytest.raises(ValueError, match="4 or 16 bytes"):
        destination(b"\x01\x02", 80)
    with pytest.raises(ValueError, match="out of range"):
        destination(bytes(4), 0)
