"""The one backoff: doubling delays up to a cap, news once per reason, a fresh start."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubepresence.protocol.backoff import Backoff


def failing(backoff: Backoff) -> bool:
    return backoff.failing  # (a call: mypy would take an asserted property as constant)


def test_doubles_to_its_limit_and_reports_each_new_reason_once() -> None:
    backoff = Backoff(first=1.0, limit=5.0)
    assert not failing(backoff)
    assert backoff.failed("connection refused") == (1.0, True)
    assert failing(backoff)
    assert backoff.failed("connection refused") == (2.0, False)
    assert backoff.failed("connection refused") == (4.0, False)
    assert backoff.failed("forbidden") == (5.0, True)
    assert backoff.failed("forbidden") == (5.0, False)
    assert backoff.succeeded() is True
    assert not failing(backoff)
    assert backoff.succeeded() is False
    # After a success the same reason is news again, and the delay starts over.
    assert backoff.failed("forbidden") == (1.0, True)


def test_a_first_failure_is_news_even_without_a_reason() -> None:
    backoff = Backoff(first=0.5, limit=15.0)
    assert backoff.failed() == (0.5, True)
    assert backoff.failed() == (1.0, False)


def test_next_delay_is_what_the_next_failure_gets() -> None:
    backoff = Backoff(first=1.0, limit=10.0)
    seen = []
    for _ in range(6):
        upcoming = backoff.next_delay
        delay, _ = backoff.failed("x")
        assert delay == upcoming == backoff.delay
        seen.append(delay)
    assert seen == [1, 2, 4, 8, 10, 10]
    backoff.succeeded()
    assert backoff.next_delay == 1.0
    assert backoff.delay == 0


def test_a_constant_delay_is_a_backoff_whose_first_is_its_limit() -> None:
    backoff = Backoff(first=0.1, limit=0.1)
    assert [backoff.failed()[0] for _ in range(3)] == [0.1, 0.1, 0.1]


@pytest.mark.parametrize(("first", "limit"), [(0, 1), (-1, 1), (10, 5)])
def test_limits_are_checked(first: float, limit: float) -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(first=first, limit=limit)


@given(
    first=st.floats(min_value=0.001, max_value=10),
    factor=st.floats(min_value=1, max_value=100),
    outcomes=st.lists(st.booleans(), max_size=40),
)
def test_delays_stay_between_first_and_limit(
    first: float, factor: float, outcomes: list[bool]
) -> None:
    backoff = Backoff(first=first, limit=first * factor)
    previous = 0.0
    for failed in outcomes:
        if not failed:
            backoff.succeeded()
            previous = 0.0
            continue
        delay, _ = backoff.failed("x")
        assert first <= delay <= first * factor
        assert delay == (first if previous == 0 else min(previous * 2, first * factor))
        previous = delay
