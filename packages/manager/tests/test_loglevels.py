"""The cluster's log level as agents get it."""

from __future__ import annotations

from kubepresence.manager.core.loglevels import ClusterLogLevel, LevelInForce


def test_nothing_in_force_before_a_level_is_set() -> None:
    assert ClusterLogLevel().in_force(now=100) is None


def test_a_level_without_duration_stays() -> None:
    levels = ClusterLogLevel()
    levels.set("debug", 0, now=10)
    assert levels.in_force(now=10_000) == LevelInForce("debug", 0)


def test_a_timed_level_gives_the_time_left_then_ends() -> None:
    levels = ClusterLogLevel()
    levels.set("debug", 30, now=100)
    assert levels.in_force(now=110) == LevelInForce("debug", 20)
    assert levels.in_force(now=130) is None


def test_each_set_is_a_change_and_the_last_wins() -> None:
    levels = ClusterLogLevel()
    levels.set("debug", 30, now=0)
    levels.set("warning", 0, now=1)
    assert levels.changes == 2
    assert levels.in_force(now=100) == LevelInForce("warning", 0)
