"""Exit codes: one per error category, none of them success."""

from __future__ import annotations

from kubepresence.cli.core.exits import ExitCode, exit_code
from kubepresence.protocol.errors import Category


def test_every_category_has_its_own_failing_exit_code() -> None:
    codes = [exit_code(category) for category in Category]
    assert len(set(codes)) == len(codes)
    assert ExitCode.OK not in codes
    assert set(codes) == set(ExitCode) - {ExitCode.OK}  # no code that nothing can return
