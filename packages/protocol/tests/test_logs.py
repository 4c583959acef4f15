"""Log records come out as text or JSON lines, at the level asked for."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubepresence.protocol import logs
from kubepresence.protocol.logs import current_level, set_level, set_level_for, setup_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("kubepresence").setLevel(logging.NOTSET)


def test_json_lines_to_a_file(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "userd.log"
    setup_logging("userd", level="debug", file=log_file, log_format="json")
    logging.getLogger("kubepresence.userd.test").debug("hello %s", "world")
    logging.getLogger("kubepresence.userd.test").info("second")
    lines = log_file.read_text().splitlines()
    first = json.loads(lines[0])
    assert first["message"] == "hello world"
    assert first["level"] == "debug"
    assert first["component"] == "userd"
    assert first["time"].endswith("Z")
    assert json.loads(lines[1])["message"] == "second"


def test_text_lines_name_component_and_logger(tmp_path: Path) -> None:
    log_file = tmp_path / "rootd.log"
    setup_logging("rootd", level="info", file=log_file)
    logging.getLogger("kubepresence.rootd.x").debug("hidden")
    logging.getLogger("kubepresence.rootd.x").warning("shown")
    text = log_file.read_text()
    assert "hidden" not in text
    assert "WARNING rootd kubepresence.rootd.x: shown" in text


def test_libraries_stay_quiet_at_debug(tmp_path: Path) -> None:
    log_file = tmp_path / "manager.log"
    setup_logging("manager", level="debug", file=log_file)
    logging.getLogger("grpclib.protocol").info("library chatter")
    logging.getLogger("kubepresence.manager").debug("ours")
    text = log_file.read_text()
    assert "library chatter" not in text
    assert "ours" in text


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        set_level("loud")


class _Reverted(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("log level back to"):
            self.event.set()


async def test_a_timed_level_goes_back_by_itself() -> None:
    reverted = _Reverted()
    logging.getLogger("kubepresence.protocol.logs").addHandler(reverted)
    try:
        set_level("info")
        set_level_for("debug", 0.05)
        assert current_level() == "debug"
        set_level_for("warning", 0.1)  # replaces the pending return; it still goes to info
        assert current_level() == "warning"
        async with asyncio.timeout(5):
            await reverted.event.wait()
        assert current_level() == "info"
    finally:
        logging.getLogger("kubepresence.protocol.logs").removeHandler(reverted)


async def test_an_untimed_level_cancels_a_pending_return() -> None:
    set_level("info")
    set_level_for("debug", 30)
    pending = logs._Revert.handle
    assert pending is not None
    set_level_for("error")
    assert pending.cancelled()
    assert logs._Revert.handle is None
    assert current_level() == "error"


def test_a_timed_unknown_level_changes_nothing() -> None:
    set_level("warning")
    with pytest.raises(ValueError, match="unknown log level"):
        set_level_for("loud", 5)
    assert current_level() == "warning"
