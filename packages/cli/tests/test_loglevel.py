"""`kubepresence loglevel` as a user meets it, without daemons or a cluster.

Scenarios: `-l` and `-r` together are refused; `-r` (traffic manager and agents) is refused
in one line because their protocol has no run-time level; a negative `--duration` is a
usage error; with no daemon running, the user is told to connect. (Reaching both running
daemons is tested end to end in tests/e2e/test_udp_fragments.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubepresence.cli.app import app
from kubepresence.cli.core.exits import ExitCode

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def test_local_and_remote_only_exclude_each_other() -> None:
    result = runner.invoke(app, ["loglevel", "debug", "-l", "-r"])
    assert result.exit_code == ExitCode.USER
    assert "exclude each other" in result.output


def test_remote_only_without_a_connection_says_connect() -> None:
    result = runner.invoke(app, ["loglevel", "debug", "--remote-only"])
    assert result.exit_code == ExitCode.CONFIG
    lines = result.output.strip().splitlines()
    assert lines == ["kubepresence: not connected: run 'kubepresence connect' first"]


def test_negative_duration_is_a_usage_error() -> None:
    result = runner.invoke(app, ["loglevel", "debug", "-d", "-5"])
    assert result.exit_code == ExitCode.USER


def test_local_only_without_daemons_says_connect() -> None:
    result = runner.invoke(app, ["loglevel", "info", "-l"])
    assert result.exit_code == ExitCode.CONFIG
    assert "not running" in result.output
    assert "kubepresence connect" in result.output
