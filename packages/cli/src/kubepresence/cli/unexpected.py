"""A bug in the CLI itself: never a traceback on the terminal, one line that says where
the traceback went (cli.log in the state dir)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from kubepresence.cli.core.exits import ExitCode
from kubepresence.cli.terminal import fail
from kubepresence.protocol import paths
from kubepresence.protocol.errors import unexpected_error_message


def report_unexpected(error: Exception) -> int:
    """A bug in the CLI itself: never a traceback on the terminal; one line that says
    where the traceback went (cli.log). The exit code to end with."""
    fail(unexpected_error_message(error, _cli_log(error)))
    return ExitCode.INTERNAL


def _cli_log(error: Exception) -> str:
    """Append the traceback of an unexpected CLI error to cli.log in the state dir (in the
    temporary directory when the state dir cannot be written); where it went."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    trace = "".join(traceback.format_exception(error))
    entry = f"{stamp} kubepresence {' '.join(sys.argv[1:])}\n{trace}\n"
    refusals = []
    for path in _cli_log_paths():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as log_file:
                log_file.write(entry)
        except OSError as refused:
            refusals.append(f"{path}: {refused.strerror or refused}")
        else:
            return str(path)
    return f"no file ({'; '.join(refusals)})"


def _cli_log_paths() -> list[Path]:
    fallback = Path(tempfile.gettempdir()) / f"kubepresence-cli-{os.getuid()}.log"
    try:
        return [paths.state_dir() / "cli.log", fallback]
    except OSError:  # no state dir at all (it is made on first use)
        return [fallback]
