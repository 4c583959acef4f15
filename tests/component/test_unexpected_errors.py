"""A bug reaches the user as one line that says where the traceback is (issue 15, item 5).

Scenarios:
- A daemon's servicer that raises an unexpected exception (a bug) answers with one line:
  the exception's type and first line and the path of the daemon's log file; the log file
  holds the traceback. (grpclib alone answers a bare "Internal Server Error".)
- Expected errors keep their category and message, untouched by that rule.
- The CLI's own bugs: one line on stderr with the path of cli.log (which holds the
  traceback), exit code 1, no traceback on the terminal.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubepresence.cli import app as cli_app
from kubepresence.cli import quick
from kubepresence.protocol.errors import Category, KubepresenceError, UserError
from kubepresence.protocol.gen import common
from kubepresence.protocol.gen import daemon as pb
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.logs import setup_logging
from kubepresence.protocol.transport import (
    client_errors,
    close_server,
    serve_unix,
    unix_channel,
)


class Buggy(pb.DaemonBase):
    async def version(self, message: protobuf.Empty) -> common.VersionInfo:
        raise ValueError("boom: the first line\nand a second one")

    async def status(self, message: protobuf.Empty) -> pb.DaemonStatus:
        raise UserError("you asked for it")


@pytest.fixture
async def buggy_daemon(tmp_path: Path) -> AsyncIterator[tuple[pb.DaemonStub, Path]]:
    log_file = tmp_path / "state" / "rootd.log"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    setup_logging("rootd", file=log_file)
    socket = tmp_path / "rootd.socket"
    server = await serve_unix([Buggy()], socket)
    channel = unix_channel(socket)
    try:
        yield pb.DaemonStub(channel), log_file
    finally:
        channel.close()
        await close_server(server)
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


async def test_a_bug_in_a_daemon_is_one_line_naming_its_log(
    buggy_daemon: tuple[pb.DaemonStub, Path],
) -> None:
    stub, log_file = buggy_daemon
    with pytest.raises(KubepresenceError) as caught:
        async with client_errors("the root daemon does not answer", Category.INTERNAL):
            await stub.version(timeout=10)
    assert caught.value.category is Category.INTERNAL
    assert caught.value.message == (
        f"unexpected error (ValueError: boom: the first line); the traceback is in {log_file}"
    )
    log = log_file.read_text()
    assert "Traceback (most recent call last)" in log
    assert "and a second one" in log


async def test_expected_errors_keep_their_category(
    buggy_daemon: tuple[pb.DaemonStub, Path],
) -> None:
    stub, log_file = buggy_daemon
    with pytest.raises(KubepresenceError) as caught:
        async with client_errors("the root daemon does not answer", Category.INTERNAL):
            await stub.status(timeout=10)
    assert (caught.value.category, caught.value.message) == (Category.USER, "you asked for it")
    assert "Traceback" not in log_file.read_text()


def test_a_bug_in_the_cli_is_one_line_naming_cli_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> str:
        raise KeyError("no such thing")

    monkeypatch.setattr(quick, "client_version", broken)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    result = CliRunner().invoke(cli_app.app, ["version", "-o", "json"])
    cli_log = tmp_path / "state" / "kubepresence" / "cli.log"
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"kubepresence: unexpected error (KeyError: 'no such thing'); the traceback is in {cli_log}"
    ]
    assert "Traceback (most recent call last)" in cli_log.read_text()
