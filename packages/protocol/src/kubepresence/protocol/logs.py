"""Logging setup shared by every process.

Daemons on the workstation log to a file in the state dir; cluster parts log to stdout
(kubectl logs). Both can write plain text or JSON lines (one object per record, for log
collectors). The level can be changed at run time (the SetLogLevel RPCs), for good or for
a number of seconds (`set_level_for`: a timer handle on the running loop turns it back).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # the CLI reads LEVELS and must not pay for asyncio's import
    import asyncio

LogFormat = Literal["text", "json"]
LEVELS = ("debug", "info", "warning", "error")
# Where this process logs, for error messages that point there ("" until set up).
_destination = {"component": "", "file": ""}
log = logging.getLogger(__name__)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, component, logger, message, exception."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def text_formatter(component: str) -> logging.Formatter:
    formatter = logging.Formatter(
        f"%(asctime)s.%(msecs)03dZ %(levelname)-7s {component} %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    return formatter


def setup_logging(
    component: str,
    *,
    level: str = "info",
    file: Path | None = None,
    log_format: LogFormat = "text",
) -> logging.Handler:
    """Route all records of this process to `file` (appending) or to stdout."""
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stdout)
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    handler.setFormatter(
        JsonFormatter(component) if log_format == "json" else text_formatter(component)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)
    _destination.update(component=component, file=str(file) if file else "")
    return handler


def log_location() -> str:
    """Where this process's log is, in words a one-line error message can end with."""
    if _destination["file"]:
        return _destination["file"]
    if _destination["component"]:
        return f"the {_destination['component']}'s log (its standard output)"
    return "this process's log"


def set_level(level: str) -> None:
    """Set the level of every kubepresence logger; libraries stay at warning or above."""
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    numeric = logging.getLevelName(level.upper())
    logging.getLogger().setLevel(max(numeric, logging.WARNING))
    logging.getLogger("kubepresence").setLevel(numeric)


class _Revert:
    """The pending return to an earlier level after `set_level_for` with a duration."""

    handle: asyncio.TimerHandle | None = None
    level = ""


def current_level() -> str:
    """The level of the kubepresence loggers, as a name from LEVELS."""
    numeric = logging.getLogger("kubepresence").getEffectiveLevel()
    return str(logging.getLevelName(numeric)).lower()


def set_level_for(level: str, seconds: float = 0) -> None:
    """Set the level; with `seconds` > 0, go back to the level before after that long.

    A later call replaces a pending return (the level it goes back to stays the one before
    the first timed change). Needs a running event loop when `seconds` > 0.
    """
    pending = _Revert.handle
    previous = _Revert.level if pending is not None else current_level()
    set_level(level)  # raises ValueError for an unknown level before anything changes
    if pending is not None:
        pending.cancel()
        _Revert.handle = None
    if seconds <= 0:
        return
    if previous == level.lower():
        return

    def revert() -> None:
        _Revert.handle = None
        set_level(previous)
        log.info("log level back to %s after %g s", previous, seconds)

    import asyncio

    _Revert.level = previous
    _Revert.handle = asyncio.get_running_loop().call_later(seconds, revert)
