from __future__ import annotations

import pytest

from kubepresence.cli.core.interceptflags import MountRequest, parse_mount


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", MountRequest(True)),
        ("", MountRequest(True)),
        ("False", MountRequest(False)),
        ("no", MountRequest(False)),
        ("/mnt/app", MountRequest(True, "/mnt/app")),
        ("vols/../app", MountRequest(True, "/home/me/app")),
        ("./true", MountRequest(True, "/home/me/true")),
    ],
)
def test_mount_values(value: str, expected: MountRequest) -> None:
    assert parse_mount(value, "/home/me") == expected
