"""A bug never reaches the user as a traceback: one line naming the log that holds it.

Scenarios, through the real entry point (`kubepresence.cli.__main__.main`):
- a command that fails with an unexpected exception prints one line on stderr (the error
  and the path of cli.log), exits 1, and cli.log holds the traceback;
- a failure outside any command (the command line's own machinery) does the same;
- when the state directory cannot be written, the traceback goes to the temporary
  directory and the line names that file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from kubepresence.cli import __main__ as entry
from kubepresence.cli import app as cli_app
from kubepresence.cli import quick
from kubepresence.cli.core.exits import ExitCode


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "100")  # narrower than the line: it must not wrap
    return tmp_path / "state" / "kubepresence" / "cli.log"


def run_main(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", ["kubepresence", *argv])
    with pytest.raises(SystemExit) as ended:
        entry.main()
    return int(ended.value.code or 0)


def broken() -> str:
    raise KeyError("no such thing")


def test_a_bug_in_a_command_is_one_line_naming_cli_log(
    private_dirs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(quick, "client_version", broken)
    assert run_main(monkeypatch, "version", "-o", "json") == ExitCode.INTERNAL
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "kubepresence: unexpected error (KeyError: 'no such thing'); the traceback is in "
        f"{private_dirs}"
    ]
    log = private_dirs.read_text()
    assert "Traceback (most recent call last)" in log
    assert "kubepresence version -o json" in log  # which command it was


def test_a_bug_outside_any_command_is_one_line_too(
    private_dirs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def exploding_app(**_: object) -> int:
        raise RuntimeError("the parser broke\nsecond line")

    monkeypatch.setattr(cli_app, "app", exploding_app)
    assert run_main(monkeypatch, "quit") == ExitCode.INTERNAL  # not a quick command
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert err.splitlines() == [
        "kubepresence: unexpected error (RuntimeError: the parser broke); the traceback is in "
        f"{private_dirs}"
    ]
    assert "second line" in private_dirs.read_text()


def test_an_unwritable_state_dir_sends_the_traceback_to_the_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "not-a-dir"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(quick, "client_version", broken)
    assert run_main(monkeypatch, "version") == ExitCode.INTERNAL
    _, err = capsys.readouterr()
    fallback = next((tmp_path / "tmp").glob("kubepresence-cli-*.log"))
    assert err.splitlines() == [
        "kubepresence: unexpected error (KeyError: 'no such thing'); the traceback is in "
        f"{fallback}"
    ]
    assert "Traceback (most recent call last)" in fallback.read_text()
