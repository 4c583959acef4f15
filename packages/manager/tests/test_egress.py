"""Choosing the agent that dials an egress flow: fewest flows, then round robin."""

from __future__ import annotations

from kubepresence.manager.core.egress import EgressChooser


def test_no_agent_no_choice() -> None:
    assert EgressChooser().choose([]) is None


def test_short_flows_go_round_robin() -> None:
    chooser = EgressChooser()
    picks = []
    for _ in range(6):
        agent = chooser.choose(["b", "a", "c"])
        assert agent is not None
        picks.append(agent)
        chooser.ended(agent)
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_a_burst_spreads_before_any_flow_ends() -> None:
    chooser = EgressChooser()
    picks = [chooser.choose(["a", "b"]) for _ in range(4)]
    assert sorted(p for p in picks if p) == ["a", "a", "b", "b"]
    assert (chooser.flows("a"), chooser.flows("b")) == (2, 2)


def test_the_agent_with_fewest_flows_wins() -> None:
    chooser = EgressChooser()
    for _ in range(3):
        assert chooser.choose(["a"]) == "a"  # three long flows on a
    assert chooser.choose(["a", "b"]) == "b"
    assert chooser.choose(["a", "b"]) == "b"  # b has 2, a has 3
    chooser.ended("a")
    chooser.ended("a")
    assert chooser.choose(["a", "b"]) == "a"  # a has 1, b has 2


def test_a_new_agent_is_chosen_before_one_chosen_already() -> None:
    chooser = EgressChooser()
    assert chooser.choose(["b"]) == "b"
    chooser.ended("b")
    assert chooser.choose(["a", "b", "c"]) == "a"
    chooser.ended("a")
    assert chooser.choose(["a", "b", "c"]) == "c"  # never chosen
    chooser.ended("c")
    assert chooser.choose(["a", "b", "c"]) == "b"  # chosen longest ago


def test_ended_and_forgotten_agents_count_nothing() -> None:
    chooser = EgressChooser()
    chooser.ended("ghost")  # more ends than flows: never negative
    assert chooser.flows("ghost") == 0
    assert chooser.choose(["a"]) == "a"
    chooser.forget("a")
    assert chooser.flows("a") == 0
    assert chooser.choose(["a", "b"]) == "a"  # forgotten: like new again
