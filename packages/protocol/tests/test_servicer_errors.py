"""What a servicer's failure becomes on the wire (`transport.translated`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from kubepresence.protocol import transport
from kubepresence.protocol.errors import ClusterError


async def _in_a_task_group(*failures: BaseException) -> None:
    async def fail(error: BaseException) -> None:
        raise error

    async with asyncio.TaskGroup() as group:
        for failure in failures:
            group.create_task(fail(failure))


def _translated(*failures: BaseException) -> BaseException:
    async def method(stream: Any) -> None:
        await _in_a_task_group(*failures)

    async def main() -> BaseException:
        try:
            await transport.translated(method)(None)  # type: ignore[arg-type]
        except BaseException as error:  # noqa: BLE001 - what the client would get
            return error
        raise AssertionError("no failure")

    return asyncio.run(main())


def test_a_lost_peer_stream_inside_a_task_group_is_that_not_a_bug() -> None:
    # A tunnel relay's task group saw the manager's stream end (a restarted manager).
    error = _translated(StreamTerminatedError("Connection lost"))
    assert isinstance(error, StreamTerminatedError)


def test_an_expected_error_inside_a_task_group_keeps_its_category() -> None:
    error = _translated(ClusterError("the traffic manager went away"))
    assert isinstance(error, GRPCError)
    assert error.status is Status.UNAVAILABLE
    assert error.message == "the traffic manager went away"


def test_a_real_bug_inside_a_task_group_is_one_line_naming_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = _translated(StreamTerminatedError("lost"), KeyError("surprise"))
    assert isinstance(error, GRPCError)
    assert error.status is Status.INTERNAL
    assert error.message is not None
    assert error.message.startswith("unexpected error (")
    assert "unexpected error in" in caplog.text
