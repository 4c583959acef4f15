"""The rules of `kubepresence helm install | upgrade | uninstall` and their result lines."""

from __future__ import annotations

import pytest

from kubepresence.userd.core.helm import outcome, refusal

OURS = "0.2.0"


@pytest.mark.parametrize(
    ("action", "installed", "refused"),
    [
        ("install", None, ""),
        ("install", OURS, ""),  # the same version again: repairs what differs
        (
            "install",
            "0.1.0",
            "traffic manager 0.1.0 is installed in kp: use 'kubepresence helm upgrade'",
        ),
        ("upgrade", "0.1.0", ""),
        ("upgrade", OURS, ""),
        ("upgrade", None, "no traffic manager in namespace kp: use 'kubepresence helm install'"),
        ("uninstall", OURS, ""),
        ("uninstall", "0.1.0", ""),
        ("uninstall", None, "no traffic manager in namespace kp"),
    ],
)
def test_each_command_refuses_what_would_surprise(
    action: str, installed: str | None, refused: str
) -> None:
    assert refusal(action, installed, OURS, "kp") == refused


def test_the_result_lines() -> None:
    assert outcome("uninstall", "kp", OURS, "12") == "traffic manager removed from kp (12 objects)"
    assert outcome("install", "kp", OURS, "installed") == "traffic manager 0.2.0 in kp: installed"
    assert (
        outcome("upgrade", "kp", OURS, "upgraded from 0.1.0")
        == "traffic manager 0.2.0 in kp: upgraded from 0.1.0"
    )
